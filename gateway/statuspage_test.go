package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/publish/broker"
)

// The status page of a real gateway: two simulated PLCs read over Modbus
// TCP, an MQTT broker that is not there at first. /readyz says why it is
// not ready until the broker comes; /metrics, the JSON API and the event
// stream follow the data.
func TestStatusPageOfRunningGateway(t *testing.T) {
	plc1 := listenPLC(t)
	plc2 := listenPLC(t)
	plc1.SetHolding(1, 0, 123)
	plc2.SetHolding(1, 0, 456)
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(pumpModel), 0o644); err != nil {
		t.Fatal(err)
	}
	text := "id: gw-page\nmodels: [m.yaml]\nshutdown_timeout: 3s\nhttp: {listen: \"127.0.0.1:0\"}\n" +
		"sinks:\n  mqtt: {url: \"mqtt://" + mqttAddr + "\"}\nsources:\n" +
		"  plc1: {url: \"" + plc1.URL() + "\", poll: 50ms, timeout: 300ms}\n" +
		"  plc2: {url: \"" + plc2.URL() + "\", poll: 50ms, timeout: 300ms}\n"
	if err := os.WriteFile(filepath.Join(dir, "gw.yaml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, m, plan, err := Load(filepath.Join(dir, "gw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, m, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	runGateway(t, g)
	base := strings.TrimSuffix(g.StatusURL(), "/")
	if g.HTTPAddr() == "" || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("status page at %q (%q)", g.StatusURL(), g.HTTPAddr())
	}

	// Data flows from the PLCs, but no sink reaches its broker.
	waitFor(t, 10*time.Second, "pump1 flow in the tag table", func() bool {
		var tr tagsJSON
		getJSON(t, base+"/api/v1/tags?filter=pump1/flow", &tr)
		return len(tr.Tags) == 1 && tr.Tags[0].Quality == "GOOD" && string(tr.Tags[0].Value) == "12.3"
	})
	resp, body := get(t, base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no sink connected (mqtt: ") {
		t.Fatalf("/readyz without a broker: %s %q", resp.Status, body)
	}
	if resp, _ := get(t, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}
	var st statusReport
	getJSON(t, base+"/api/v1/status", &st)
	if len(st.Sinks) != 1 || st.Sinks[0].Name != "mqtt" || st.Sinks[0].Connected {
		t.Errorf("sinks before the broker: %+v", st.Sinks)
	}
	for _, s := range st.Sources {
		if s.State != "connected" || s.LastGoodReadMS == 0 || s.Requests == 0 || s.LatencyMS <= 0 || s.Tags.Good != 3 {
			t.Errorf("source %+v", s)
		}
	}

	// The broker comes: the sink connects and the gateway is ready.
	b, err := broker.Start(mqttAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitFor(t, 15*time.Second, "/readyz 200", func() bool {
		resp, _ := get(t, base+"/readyz")
		return resp.StatusCode == http.StatusOK
	})
	first := scrape(t, base)
	if v, _ := metric(first, "unsgate_sink_connected", "sink", "mqtt"); v != 1 {
		t.Errorf("unsgate_sink_connected{sink=mqtt} = %v", v)
	}
	if v, _ := metric(first, "unsgate_ready"); v != 1 {
		t.Errorf("unsgate_ready = %v", v)
	}
	if v, _ := metric(first, "unsgate_source_up", "source", "plc2"); v != 1 {
		t.Errorf("unsgate_source_up{source=plc2} = %v", v)
	}
	// The PLC values are unchanged (nothing new to publish), but every
	// poll is a request and a batch of samples; a new value is one more
	// message sent.
	plc1.SetHolding(1, 0, 124)
	waitFor(t, 10*time.Second, "requests, samples and sent messages to grow", func() bool {
		now := scrape(t, base)
		for _, c := range []struct {
			name   string
			labels []string
		}{
			{"unsgate_source_requests_total", []string{"source", "plc1"}},
			{"unsgate_source_request_duration_seconds", []string{"source", "plc1"}},
			{"unsgate_engine_samples_total", nil},
			{"unsgate_sink_sent_total", []string{"sink", "mqtt"}},
		} {
			a, _ := metric(first, c.name, c.labels...)
			b, _ := metric(now, c.name, c.labels...)
			if b <= a {
				return false
			}
		}
		return true
	})

	// A new value reaches an open event stream.
	s := openEvents(t, base+"/api/v1/events?filter=pump2")
	if full := s.nextTags(t, 5*time.Second); !full.Full || len(full.Tags) != 4 {
		t.Fatalf("first tags event: %v", paths(full))
	}
	plc2.SetHolding(1, 0, 789)
	deadline := time.Now().Add(10 * time.Second)
	for {
		delta := s.nextTags(t, time.Until(deadline))
		if found := func() bool {
			for _, r := range delta.Tags {
				if r.Path == "acme/plant/water/line1/pump2/flow" && string(r.Value) == "78.9" {
					return true
				}
			}
			return false
		}(); found {
			break
		}
	}

	// The sparkline's history holds the values seen.
	var h historyResponse
	getJSON(t, base+"/api/v1/tags/acme/plant/water/line1/pump2/flow/history", &h)
	if n := len(h.Values); n < 2 || h.Values[n-1].Value != 78.9 {
		t.Errorf("history %+v", h.Values)
	}
}

// The gateway refuses to start when the status page's port is taken, and
// says so, before anything connects.
func TestStatusPagePortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	text := "id: gw\nmodels: [m.yaml]\nbroker: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"" + l.Addr().String() + "\"}\n" +
		"sources:\n  plc1: {url: \"tcp://127.0.0.1:1\"}\n  plc2: {url: \"tcp://127.0.0.1:1\"}\n"
	_, g := buildGateway(t, text, pumpModel, nil)
	err = g.Run(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "status page on "+l.Addr().String()) || !strings.Contains(err.Error(), "--http-listen") {
		t.Fatalf("Run with the port taken: %v", err)
	}
	if g.BrokerAddr() != "" {
		t.Error("the broker started although the gateway could not")
	}
}
