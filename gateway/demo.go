package gateway

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/sparkplug"
)

// DemoOptions configures RunDemo.
type DemoOptions struct {
	// MQTTListen is the embedded broker's address (default 127.0.0.1:1883).
	MQTTListen string
	// HTTPListen is the status page's address (default 127.0.0.1:8080).
	// Beyond loopback it needs HTTPToken.
	HTTPListen string
	// HTTPToken, if set, is the status page's token (http.token).
	HTTPToken string
	// KafkaBrokers, if set, adds a Kafka sink producing to these seed
	// brokers (host:port) with the default topic.
	KafkaBrokers []string
	// Sparkplug also makes the demo a Sparkplug B edge node on the
	// embedded broker (group munich, edge node demo).
	Sparkplug bool
	// Models are the model files to run, usually the embedded examples.
	Models fs.FS
	// Out receives the banner with the addresses; Logger the logs.
	Out    io.Writer
	Logger *slog.Logger
	// Seed makes the simulated line reproducible.
	Seed int64
	// Started, if not nil, is called with the running gateway once it is up.
	Started func(*Gateway)
}

// DemoConfig is the gateway config the demo runs with: a Modbus source at
// plcURL (line 1), an OPC UA source at uaURL (line 2: Basic256Sha256
// SignAndEncrypt with a user name, the server's certificate trusted in
// dataDir/pki/trusted), and the embedded broker on listen. It goes through
// the same parser and validation as a config file. sparkplug adds a
// sinks.sparkplug section; kafkaBrokers, if any, a sinks.kafka one.
func DemoConfig(plcURL, uaURL, dataDir, listen string, sparkplug bool, kafkaBrokers ...string) (*Config, error) {
	text := "id: demo\n" +
		"models: [models]\n" +
		"data_dir: " + strconv.Quote(dataDir) + "\n" +
		"shutdown_timeout: 5s\n" +
		"sources:\n" +
		"  plc1:\n" +
		"    url: " + strconv.Quote(plcURL) + "\n" +
		"    unit_id: 1\n" +
		"    poll: 500ms\n" +
		"    timeout: 1s\n" +
		"    backoff: {initial: 200ms, max: 5s}\n" +
		"  ua1:\n" +
		"    url: " + strconv.Quote(uaURL) + "\n" +
		"    username: operator\n" +
		"    password: demo\n" +
		"    publishing_interval: 500ms\n" +
		"    keepalive: 5s\n" +
		"    backoff: {initial: 200ms, max: 5s}\n" +
		"broker:\n" +
		"  listen: " + strconv.Quote(listen) + "\n"
	if sparkplug || len(kafkaBrokers) > 0 {
		text += "sinks:\n"
	}
	if sparkplug {
		text += "  sparkplug: {}\n"
	}
	if len(kafkaBrokers) > 0 {
		text += "  kafka:\n    brokers:\n"
		for _, b := range kafkaBrokers {
			text += "      - " + strconv.Quote(b) + "\n"
		}
	}
	return ParseConfig("demo.yaml", []byte(text), func(string) (string, bool) { return "", false })
}

// RunDemo starts a simulated bottling-line PLC (a real Modbus TCP server on
// loopback) for line 1, a simulated OPC UA server for line 2, the embedded
// MQTT broker, and a gateway reading both through the real connectors with
// the example models, until ctx is done. The gateway's state (its OPC UA
// certificate and trust list) lives in a temporary folder removed at the
// end.
func RunDemo(ctx context.Context, opts DemoOptions) error {
	if opts.MQTTListen == "" {
		opts.MQTTListen = DefaultBrokerListen
	}
	if opts.HTTPListen == "" {
		opts.HTTPListen = DefaultHTTPListen
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	files, err := readModelFS(opts.Models)
	if err != nil {
		return err
	}
	m, err := model.LoadFiles(files)
	if err != nil {
		return fmt.Errorf("example models:\n%w", err)
	}

	plc, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("simulated PLC: %w", err)
	}
	defer plc.Close()
	line := sim.NewBottlingLine(plc, opts.Seed)
	lineCtx, stopLine := context.WithCancel(ctx)
	defer stopLine()
	go line.Run(lineCtx, 200*time.Millisecond)

	uaSrv, err := sim.StartOPCUA(sim.OPCUAOptions{Secure: true, UserName: true})
	if err != nil {
		return fmt.Errorf("simulated OPC UA server: %w", err)
	}
	defer uaSrv.Close()
	line2 := sim.NewBottlingLine2(uaSrv, opts.Seed)
	go line2.Run(lineCtx, 200*time.Millisecond)

	dataDir, err := os.MkdirTemp("", "unsgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	// Trust the simulated server the way an operator would: its certificate
	// in the trusted folder.
	trusted := filepath.Join(dataDir, "pki", "trusted")
	if err := os.MkdirAll(trusted, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(trusted, "sim-server.der"), uaSrv.Certificate(), 0o600); err != nil {
		return err
	}

	cfg, err := DemoConfig(plc.URL(), uaSrv.Endpoint(), dataDir, opts.MQTTListen, opts.Sparkplug, opts.KafkaBrokers...)
	if err != nil {
		return err
	}
	cfg.HTTP.Token.V = opts.HTTPToken
	if err := cfg.SetHTTPListen(opts.HTTPListen); err != nil {
		return fmt.Errorf("%w (the demo's token: --http-token-env)", err)
	}
	m, plan, err := CompileModel(cfg, m)
	if err != nil {
		return fmt.Errorf("example models:\n%w", err)
	}
	g, err := New(cfg, m, plan, opts.Logger)
	if err != nil {
		return err
	}
	g.SetModelVersion(ModelFilesVersion(files))
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx, started) }()
	select {
	case err := <-errc:
		return err
	case <-started:
	}
	addr := g.BrokerAddr()
	fmt.Fprintf(opts.Out, "unsgate demo: %d tags from two simulated bottling lines\n", len(plan.Tags()))
	fmt.Fprintf(opts.Out, "  line 1 PLC     %s (Modbus TCP, unit 1)\n", plc.URL())
	fmt.Fprintf(opts.Out, "  line 2 server  %s (OPC UA, Basic256Sha256 SignAndEncrypt, user operator)\n", uaSrv.Endpoint())
	fmt.Fprintf(opts.Out, "  MQTT broker    mqtt://%s\n", addr)
	if len(opts.KafkaBrokers) > 0 {
		fmt.Fprintf(opts.Out, "  Kafka          %s (topic %s)\n", strings.Join(opts.KafkaBrokers, ","), kafka.DefaultTopic)
	}
	if g.sparkplug != nil {
		fmt.Fprintf(opts.Out, "  Sparkplug B    %s/%s/+/%s (edge node; devices are the assets)\n", sparkplug.Namespace, defaultGroupID(g.spPrefix, cfg.ID), cfg.ID)
	}
	fmt.Fprintf(opts.Out, "  presence       %s\n", g.PresenceTopic())
	fmt.Fprintf(opts.Out, "Status page: %s\n", g.StatusURL())
	if host, _, _ := net.SplitHostPort(g.HTTPAddr()); !isLoopbackHost(host) {
		fmt.Fprintf(opts.Out, "  listening on %s: from another device use this box's address; log in with the token\n", g.HTTPAddr())
	}
	fmt.Fprintf(opts.Out, "Watch the namespace from another shell:\n")
	fmt.Fprintf(opts.Out, "  go run ./cmd/unsgate sub --broker %s '#'\n", addr)
	host, port, _ := net.SplitHostPort(addr) // the broker's own bound address
	fmt.Fprintf(opts.Out, "  mosquitto_sub -V mqttv5 -h %s -p %s -t '#' -v\n", host, port)
	if g.sparkplug != nil {
		fmt.Fprintf(opts.Out, "  go run ./cmd/unsgate sub --broker %s 'spBv1.0/#'   (Sparkplug payloads decoded)\n", addr)
	}
	if len(opts.KafkaBrokers) > 0 {
		fmt.Fprintf(opts.Out, "  kcat -C -b %s -t %s -f '%%k %%s %%h\\n'\n", opts.KafkaBrokers[0], kafka.DefaultTopic)
	}
	fmt.Fprintf(opts.Out, "Ctrl-C stops the demo.\n")
	if opts.Started != nil {
		opts.Started(g)
	}
	return <-errc
}

// readModelFS reads the model files at the top of fsys (the embedded
// examples), named as they are in the repository.
func readModelFS(fsys fs.FS) ([]model.File, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, err
	}
	files := make([]model.File, 0, len(names))
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		files = append(files, model.File{Name: "models/" + name, Data: data})
	}
	return files, nil
}
