// Command unsgate is the Unified Namespace gateway's command line: run the
// gateway, validate model files and configs, run the demo, watch topics.
// It only parses flags and calls the gateway package.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `unsgate - Unified Namespace gateway: PLC tags in, ISA-95 UNS out.

Usage:
  unsgate run --config FILE [--http-listen ADDR]
                                     run the gateway (status page on 127.0.0.1:8080)
  unsgate validate PATH...           check model files, model folders and gateway configs
  unsgate browse ENDPOINT [--node ID] [--depth N]
                                     list an OPC UA server's variables and print a model skeleton
  unsgate demo [--mqtt-listen ADDR] [--http-listen ADDR]
                                     simulated bottling line + embedded broker + status page
  unsgate sub [--broker ADDR] FILTER print messages from an MQTT broker
  unsgate bench [--tags N]           load test: simulated PLC -> gateway -> broker -> subscriber
  unsgate broker [--listen ADDR]     only the embedded MQTT broker
  unsgate version

Run 'unsgate COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "demo":
		return cmdDemo(rest, stdout, stderr)
	case "sub":
		return cmdSub(rest, stdout, stderr)
	case "browse":
		return cmdBrowse(rest, stdout, stderr)
	case "bench":
		return cmdBench(rest, stdout, stderr)
	case "broker":
		return cmdBroker(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "unsgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unsgate: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// signalContext is cancelled by SIGINT or SIGTERM. A second signal exits at
// once, for when a flush takes longer than the operator wants to wait.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(os.Stderr, "unsgate: second signal, exiting without waiting for the flush")
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// parseFlags parses interspersed flags and positional arguments, so
// `validate models/ --quiet` and `validate --quiet models/` both work.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func printErr(stderr io.Writer, err error) {
	msg := err.Error()
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	fmt.Fprint(stderr, msg)
}
