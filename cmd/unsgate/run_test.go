package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	dir, brokerAddr := pumpGateway(t, "")

	var stderr lockedBuffer
	cmd := exec.Command(os.Args[0], "run", "--config", filepath.Join(dir, "gw.yaml"), "--http-listen", "127.0.0.1:0")
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
	var err error
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

	// --http-listen put the status page on a free port; the log says where.
	page := regexp.MustCompile(`msg="status page" url=(http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(stderr.String())
	if page == nil {
		t.Fatalf("no status page in the log:\n%s", stderr.String())
	}
	resp, err := http.Get(page[1] + "readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %sreadyz: %s", page[1], resp.Status)
	}

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

// The status page beyond loopback without credentials: `unsgate run`
// refuses to start and says why, from the config file (at the key) and
// from --http-listen.
func TestRunRefusesOpenStatusPage(t *testing.T) {
	dir := t.TempDir()
	base := "id: edge-test\nmodels: [m.yaml]\nsources:\n  plc1: {url: \"tcp://127.0.0.1:1\"}\n"
	writeFiles(t, dir, map[string]string{
		"m.yaml":    runModel,
		"open.yaml": base + "http:\n  listen: 0.0.0.0:8080\n",
		"gw.yaml":   base,
	})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--config", filepath.Join(dir, "open.yaml")},
			filepath.Join(dir, "open.yaml") + ":6:11: http.listen 0.0.0.0:8080: binding beyond loopback needs http.token or http.username/password"},
		{[]string{"run", "--config", filepath.Join(dir, "gw.yaml"), "--http-listen", "0.0.0.0:8080"},
			"unsgate: --http-listen 0.0.0.0:8080: binding beyond loopback needs http.token or http.username/password"},
	} {
		var out, errOut bytes.Buffer
		if code := run(c.args, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d\n%s\nwant %s", c.args, code, errOut.String(), c.want)
		}
	}
}

func TestDemoTokenEnvMustBeSet(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"demo", "--http-listen", "0.0.0.0:0", "--http-token-env", "UNSGATE_TEST_NO_SUCH_VAR"}, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "environment variable UNSGATE_TEST_NO_SUCH_VAR is not set") {
		t.Errorf("exit %d\n%s", code, errOut.String())
	}
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

// runProcess is `unsgate run` as a real process, with a subscriber on the
// broker it embeds.
type runProcess struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan error

	mu  sync.Mutex
	got []string // "topic payload" of every message, in order
}

// startRun runs `unsgate run --config config` and subscribes to filter on
// the gateway's embedded broker at brokerAddr.
func startRun(t *testing.T, config, brokerAddr, filter string) *runProcess {
	t.Helper()
	p := &runProcess{t: t, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], "run", "--config", config, "--http-listen", "127.0.0.1:0")
	p.cmd.Env = append(os.Environ(), "UNSGATE_TEST_MAIN=1")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
		}
	})

	var c *paho.Client
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err = mqtt.Subscribe(context.Background(), brokerAddr, "run-test", []string{filter}, 1, func(m *paho.Publish) {
			p.mu.Lock()
			p.got = append(p.got, m.Topic+" "+string(m.Payload))
			p.mu.Unlock()
		}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cannot reach the gateway's broker: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return p
}

// waitMsg waits until a message on topic containing text has arrived, at
// any time since the start.
func (p *runProcess) waitMsg(topic, text string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		for _, m := range p.got {
			if strings.HasPrefix(m, topic+" ") && strings.Contains(m, text) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			p.t.Fatalf("no message on %s containing %s\n%s", topic, text, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *runProcess) stop() {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Fatalf("exit: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(8 * time.Second):
		p.t.Fatalf("did not stop within 8s after SIGTERM\n%s", p.stderr.String())
	}
	p.t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// pumpGateway starts a simulated PLC whose register 0 holds 421 (closed
// when the test ends) and writes, in a temporary folder it returns, runModel
// as m.yaml and a gw.yaml that reads the PLC every 100 ms and runs its
// embedded broker on the free port it returns; extra is added to gw.yaml.
func pumpGateway(t *testing.T, extra string) (dir, brokerAddr string) {
	t.Helper()
	plc, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plc.Close() })
	plc.SetHolding(1, 0, 421)
	dir, brokerAddr = t.TempDir(), freePort(t)
	config := fmt.Sprintf("id: edge-test\nmodels: [m.yaml]\nshutdown_timeout: 3s\n%s"+
		"sources:\n  plc1: {url: %q, poll: 100ms}\nbroker: {listen: %q}\n", extra, plc.URL(), brokerAddr)
	writeFiles(t, dir, map[string]string{"m.yaml": runModel, "gw.yaml": config})
	return dir, brokerAddr
}

const runModel = "base: acme/plant/water\ntypes:\n  Pump:\n    tags:\n      flow: {address: \"holding:0\", type: uint16}\n" +
	"assets:\n  line1/pump1: {type: Pump, source: plc1}\n"

// SIGHUP reads the model files again and applies them: with watching off,
// a new tag appears only after the signal.
func TestRunReloadsOnSIGHUP(t *testing.T) {
	dir, brokerAddr := pumpGateway(t, "reload: {watch: false}\n")
	p := startRun(t, filepath.Join(dir, "gw.yaml"), brokerAddr, "acme/#")
	p.waitMsg("acme/plant/water/line1/pump1/flow", `"value":421,"quality":"GOOD"`)

	writeFiles(t, dir, map[string]string{"m.yaml": strings.Replace(runModel, "type: uint16}\n",
		"type: uint16}\n      double: {expr: \"flow * 2\"}\n", 1)})
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitMsg("acme/plant/water/line1/pump1/double", `"value":842,"quality":"GOOD"`)
	if log := p.stderr.String(); !strings.Contains(log, "reload applied") {
		t.Errorf("no reload in the log:\n%s", log)
	}
	p.stop()
}
