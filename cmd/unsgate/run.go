package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/unsgate/unsgate/gateway"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "unsgate.yaml", "gateway config `file`")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default: the config's log_level)")
	if _, err := parseFlags(fs, args); err != nil {
		return 2
	}
	cfg, m, plan, err := gateway.Load(*config)
	if err != nil {
		printErr(stderr, err)
		return 1
	}
	level := cfg.LogLevel
	if *logLevel != "" {
		level = *logLevel
	}
	logger := newLogger(stderr, level)
	g, err := gateway.New(cfg, m, plan, logger)
	if err != nil {
		fmt.Fprintf(stderr, "unsgate: %v\n", err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	if err := g.Run(ctx, nil); err != nil {
		fmt.Fprintf(stderr, "unsgate: %v\n", err)
		return 1
	}
	return 0
}
