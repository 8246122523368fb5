package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/unsgate/unsgate/publish/broker"
)

// cmdBroker runs only the embedded MQTT broker, e.g. as a separate process
// for `unsgate bench --broker`.
func cmdBroker(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", broker.DefaultAddr, "listen `address`")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if _, err := parseFlags(fs, args); err != nil {
		return 2
	}
	b, err := broker.Start(*listen, newLogger(stderr, *logLevel))
	if err != nil {
		fmt.Fprintf(stderr, "unsgate broker: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "MQTT broker on mqtt://%s; Ctrl-C stops it\n", b.Addr())
	ctx, stop := signalContext()
	defer stop()
	<-ctx.Done()
	if err := b.Close(); err != nil {
		fmt.Fprintf(stderr, "unsgate broker: %v\n", err)
		return 1
	}
	return 0
}
