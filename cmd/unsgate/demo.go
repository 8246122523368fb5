package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"github.com/unsgate/unsgate/gateway"
	"github.com/unsgate/unsgate/models"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("mqtt-listen", gateway.DefaultBrokerListen, "embedded MQTT broker `address`")
	httpListen := fs.String("http-listen", gateway.DefaultHTTPListen, "status page `address`; beyond loopback it needs --http-token-env")
	tokenEnv := fs.String("http-token-env", "", "environment `variable` holding the status page's token (Bearer, or as the password of the browser's login)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	seed := fs.Int64("seed", 1, "random seed of the simulated line")
	spb := fs.Bool("sparkplug", false, "also be a Sparkplug B edge node on the embedded broker")
	kafkaBrokers := fs.String("kafka-brokers", "", "also produce to Kafka at these seed brokers (`host:port,...`)")
	if _, err := parseFlags(fs, args); err != nil {
		return 2
	}
	if *logLevel != "debug" {
		// The OPC UA library's server prints its node set import with the
		// standard logger; the demo's own logs go through slog.
		log.SetOutput(io.Discard)
	}
	var brokers []string
	for _, b := range strings.Split(*kafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	var token string
	if *tokenEnv != "" {
		token = os.Getenv(*tokenEnv)
		if token == "" {
			fmt.Fprintf(stderr, "unsgate demo: --http-token-env: environment variable %s is not set or empty\n", *tokenEnv)
			return 2
		}
	}
	ctx, stop := signalContext()
	defer stop()
	err := gateway.RunDemo(ctx, gateway.DemoOptions{
		MQTTListen: *listen, HTTPListen: *httpListen, HTTPToken: token, KafkaBrokers: brokers, Sparkplug: *spb, Models: models.FS, Out: stdout,
		Logger: newLogger(stderr, *logLevel), Seed: *seed,
	})
	if err != nil {
		fmt.Fprintf(stderr, "unsgate demo: %v\n", err)
		return 1
	}
	return 0
}
