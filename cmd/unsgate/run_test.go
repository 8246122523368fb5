package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/publish/mqtt"
)

// When the test binary is started with this variable set, it is unsgate.
func TestMain(m *testing.M) {
	if os.Getenv("UNSGATE_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// `unsgate run` as a real process: it publishes, and SIGTERM stops it
// cleanly within the shutdown bound, marking the gateway offline.
func TestRunStopsOnSIGTERM(t *testing.T) {
	plc, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plc.Close()
	plc.SetHolding(1, 0, 421)

	dir := t.TempDir()
	brokerAddr := freePort(t)
	model := "base: acme/plant/water\ntypes:\n  Pump:\n    tags:\n      flow: {address: \"holding:0\", type: uint16}\n" +
		"assets:\n  line1/pump1: {type: Pump, source: plc1}\n"
	config := fmt.Sprintf("id: edge-test\nmodels: [m.yaml]\nshutdown_timeout: 3s\n"+
		"sources:\n  plc1: {url: %q, poll: 100ms}\nbroker: {listen: %q}\n", plc.URL(), brokerAddr)
	for name, text := range map[string]string{"m.yaml": model, "gw.yaml": config} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var stderr lockedBuffer
	cmd := exec.Command(os.Args[0], "run", "--config", filepath.Join(dir, "gw.yaml"))
	cmd.Env = append(os.Environ(), "UNSGATE_TEST_MAIN=1")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()

	// Watch the broker the gateway embeds: the value, then the presence.
	var mu sync.Mutex
	var got []string
	var c *paho.Client
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err = mqtt.Subscribe(context.Background(), brokerAddr, "run-test", []string{"acme/#"}, 1, func(p *paho.Publish) {
			mu.Lock()
			got = append(got, p.Topic+" "+string(p.Payload))
			mu.Unlock()
		}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot reach the gateway's broker: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Disconnect(&paho.Disconnect{})
	// waitMsg waits until a message on topic containing text has arrived,
	// at any time since the start.
	waitMsg := func(topic, text string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			for _, m := range got {
				if strings.HasPrefix(m, topic+" ") && strings.Contains(m, text) {
					mu.Unlock()
					return
				}
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatalf("no message on %s containing %s\n%s", topic, text, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMsg("acme/plant/water/line1/pump1/flow", `"value":421,"quality":"GOOD"`)
	waitMsg("acme/plant/_gateways/edge-test/status", `"online":true`)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("did not stop within 8s after SIGTERM\n%s", stderr.String())
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	waitMsg("acme/plant/_gateways/edge-test/status", `"online":false`)
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
