package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/unsgate/unsgate/gateway"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "unsgate.yaml", "gateway config `file`")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default: the config's log_level)")
	httpListen := fs.String("http-listen", "", "status page `address` (default: the config's http.listen, else "+gateway.DefaultHTTPListen+")")
	if _, err := parseFlags(fs, args); err != nil {
		return 2
	}
	cfg, m, plan, err := gateway.Load(*config)
	if err != nil {
		printErr(stderr, err)
		return 1
	}
	if *httpListen != "" {
		if err := cfg.SetHTTPListen(*httpListen); err != nil {
			fmt.Fprintf(stderr, "unsgate: %v\n", err)
			return 1
		}
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
	if *httpListen != "" {
		// A reload reads the file again: the flag must win there too.
		g.SetConfigOverride(func(c *gateway.Config) error { return c.SetHTTPListen(*httpListen) })
	}
	ctx, stop := signalContext()
	defer stop()
	defer reloadOnSIGHUP(ctx, g, logger)()
	if err := g.Run(ctx, nil); err != nil {
		fmt.Fprintf(stderr, "unsgate: %v\n", err)
		return 1
	}
	return 0
}

// reloadOnSIGHUP makes each SIGHUP read the config and model files again,
// until ctx is done; the gateway logs the result and shows it on the
// status page. SIGHUP is caught from here on (its default would end the
// process); the returned func stops that.
func reloadOnSIGHUP(ctx context.Context, g *gateway.Gateway, logger *slog.Logger) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading the config and model files")
				if _, err := g.ReloadFiles(); errors.Is(err, gateway.ErrNotRunning) {
					logger.Warn("SIGHUP: not reloaded", "err", err)
				}
			}
		}
	}()
	return func() { signal.Stop(hup) }
}
