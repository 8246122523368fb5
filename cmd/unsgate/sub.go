package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", strings.TrimPrefix(*addr, "mqtt://"))
	if err != nil {
		fmt.Fprintf(stderr, "unsgate sub: %v\n", err)
		return 1
	}
	var mu sync.Mutex
	seen := 0
	closing := false
	done := make(chan struct{})
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if *count > 0 && seen >= *count {
				return true, nil
			}
			flag := ""
			if pr.Packet.Retain {
				flag = " (retained)"
			}
			fmt.Fprintf(stdout, "%s %s%s\n", pr.Packet.Topic, pr.Packet.Payload, flag)
			seen++
			if *count > 0 && seen == *count {
				close(done)
			}
			return true, nil
		}},
		OnClientError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if !closing {
				fmt.Fprintf(stderr, "unsgate sub: %v\n", err)
			}
		},
	})
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: fmt.Sprintf("unsgate-sub-%d", time.Now().UnixNano()%1e6), CleanStart: true, KeepAlive: 30}); err != nil {
		fmt.Fprintf(stderr, "unsgate sub: connect %s: %v\n", *addr, err)
		return 1
	}
	subs := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: 1}
	}
	if _, err := c.Subscribe(cctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		fmt.Fprintf(stderr, "unsgate sub: subscribe: %v\n", err)
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
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	return 0
}
