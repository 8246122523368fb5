// Package mosquitto runs Debian's mosquitto broker as an independent MQTT
// peer for interop tests (UNSGATE_INTEROP=1, after .ci/interop-mqtt.sh has
// installed it). Only tests import it.
package mosquitto

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"syscall"
	"testing"
	"time"
)

// Enabled reports whether interop tests against mosquitto should run.
func Enabled() bool { return os.Getenv("UNSGATE_INTEROP") == "1" }

// Peer is a mosquitto process on a fixed loopback port, with persistence in
// a temporary folder, so it can be stopped and started again.
type Peer struct {
	t                    testing.TB
	bin, conf, addr, dir string
	cmd                  *exec.Cmd
}

// Start runs mosquitto on a free port and stops it when the test ends. It
// fails the test if mosquitto is not installed.
func Start(t testing.TB) *Peer {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/mosquitto"); err2 != nil {
			t.Fatalf("mosquitto not installed (.ci/interop-mqtt.sh installs it): %v", err)
		}
		bin = "/usr/sbin/mosquitto"
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := dir + "/mosquitto.conf"
	// Started as root, mosquitto switches to the user "mosquitto", which
	// cannot write to the test's private folder: it would save no
	// persistence file, and a restart would lose the sessions and the
	// messages queued for them. "user" keeps the current user (and has no
	// effect when not root).
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
max_queued_messages 0
user %s
log_dest stderr
log_type error
log_type warning
`, port, dir, me.Username)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{t: t, bin: bin, conf: conf, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	p.Start(t)
	t.Cleanup(p.Stop)
	return p
}

// Addr is host:port.
func (p *Peer) Addr() string { return p.addr }

// Start starts the process (again) and waits until it listens.
func (p *Peer) Start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "-c", p.conf)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", p.addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v", p.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends mosquitto with SIGTERM, which saves its persistence file; the
// test fails if there is none (a restart would then lose what the broker
// had accepted).
func (p *Peer) Stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
	if _, err := os.Stat(p.dir + "/mosquitto.db"); err != nil {
		p.t.Errorf("mosquitto saved no persistence file: %v", err)
	}
}
