package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/unsgate/unsgate/gateway"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tags := fs.Int("tags", 10000, "number of tags (every one changes every poll)")
	poll := fs.Duration("poll", 0, "poll interval (default 100ms)")
	duration := fs.Duration("duration", 0, "measured time (default 20s)")
	warmup := fs.Duration("warmup", 0, "time before measuring (default 3s)")
	sub := fs.Bool("subscribe", true, "add a QoS 1 subscriber that measures end-to-end latency")
	brokerAddr := fs.String("broker", "", "external broker `host:port` (e.g. 'unsgate broker' in another shell); default: embedded")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	memprofile := fs.String("memprofile", "", "write a heap profile to `file` at the end of the measured time (the gateway still running)")
	if _, err := parseFlags(fs, args); err != nil {
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	opts := gateway.BenchOptions{Tags: *tags, Poll: *poll, Duration: *duration,
		Warmup: *warmup, Subscribe: *sub, Broker: *brokerAddr, Logger: newLogger(stderr, *logLevel)}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			fmt.Fprintf(stderr, "unsgate bench: %v\n", err)
			return 1
		}
		defer f.Close()
		opts.HeapProfile = f
	}
	res, err := gateway.RunBench(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "unsgate bench: %v\n", err)
		return 1
	}
	res.Print(stdout)
	return 0
}
