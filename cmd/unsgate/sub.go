package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/publish/mqtt"
	"github.com/unsgate/unsgate/publish/sparkplug"
)

// cmdSub is a minimal MQTT v5 subscriber, so that the demo can be watched on
// a machine with nothing but Go installed.
func cmdSub(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("broker", "127.0.0.1:1883", "broker `host:port`")
	count := fs.Int("n", 0, "exit after this many messages (0 = run until interrupted)")
	timeout := fs.Duration("timeout", 0, "exit after this long (0 = no limit)")
	filters, err := parseFlags(fs, args)
	if err != nil {
		return 2
	}
	if len(filters) == 0 {
		filters = []string{"#"}
	}
	ctx, stop := signalContext()
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	var mu sync.Mutex
	seen, closing := 0, false
	spb := sparkplug.NewReader() // Sparkplug B payloads are binary: shown decoded
	done := make(chan struct{})
	c, err := mqtt.Subscribe(ctx, *addr, fmt.Sprintf("unsgate-sub-%d", time.Now().UnixNano()%1e6), filters, 1,
		func(p *paho.Publish) {
			mu.Lock()
			defer mu.Unlock()
			if *count > 0 && seen >= *count {
				return
			}
			flag := ""
			if p.Retain {
				flag = " (retained)"
			}
			if sparkplug.IsSparkplug(p.Topic) {
				fmt.Fprintf(stdout, "%s %s%s\n", p.Topic, spb.Text(p.Topic, p.Payload), flag)
			} else {
				fmt.Fprintf(stdout, "%s %s%s\n", p.Topic, p.Payload, flag)
			}
			seen++
			if *count > 0 && seen == *count {
				close(done)
			}
		},
		func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if !closing {
				fmt.Fprintf(stderr, "unsgate sub: %v\n", err)
			}
		})
	if err != nil {
		fmt.Fprintf(stderr, "unsgate sub: %v\n", err)
		return 1
	}
	select {
	case <-ctx.Done():
	case <-done:
	case <-c.Done():
		fmt.Fprintln(stderr, "unsgate sub: connection closed by the broker")
		return 1
	}
	mu.Lock()
	closing = true
	mu.Unlock()
	_ = c.Disconnect(&paho.Disconnect{})
	return 0
}
