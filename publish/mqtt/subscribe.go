package mqtt

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Subscribe connects a plain MQTT v5 client to addr (host:port, or
// mqtt://host:port) and subscribes to filters; every message received is
// handed to handle on the client's reader goroutine. It is for tools that
// watch a broker (unsgate sub, unsgate bench, tests), not part of the
// gateway's data path. The connection ends when ctx is done or with the
// returned client's Disconnect; onError, if not nil, gets connection errors.
func Subscribe(ctx context.Context, addr, clientID string, filters []string, qos byte,
	handle func(*paho.Publish), onError func(error)) (*paho.Client, error) {
	addr = strings.TrimPrefix(addr, "mqtt://")
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			handle(pr.Packet)
			return true, nil
		}},
		OnClientError: onError,
	})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: paho.Uint16(65535)}}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscribe: connect %s: %w", addr, err)
	}
	subs := make([]paho.SubscribeOptions, len(filters))
	for i, f := range filters {
		subs[i] = paho.SubscribeOptions{Topic: f, QoS: qos}
	}
	if _, err := c.Subscribe(cctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
		_ = c.Disconnect(&paho.Disconnect{})
		return nil, fmt.Errorf("subscribe %v: %w", filters, err)
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = c.Disconnect(&paho.Disconnect{})
		case <-c.Done():
		}
	}()
	return c, nil
}
