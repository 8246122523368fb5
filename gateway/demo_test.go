package gateway

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/unsgate/unsgate/models"
)

// demoStartLimit bounds how long tests wait for the demo to start. The
// demo's simulated OPC UA server parses the standard node set (gopcua's
// server.New), which takes about 2.5 s with the race detector on an idle
// 2-core box and four times that with other test packages running.
const demoStartLimit = 60 * time.Second

// startDemo runs the demo with opts (on free loopback ports, with the
// example models) and returns its gateway once it has started, failing the
// test if the demo stops or does not start within demoStartLimit. stop
// ends the demo and fails the test unless it returns nil within limit;
// if the test does not call it, it runs when the test ends, with 15 s.
func startDemo(t *testing.T, opts DemoOptions) (g *Gateway, stop func(limit time.Duration)) {
	t.Helper()
	opts.MQTTListen, opts.HTTPListen, opts.Models = "127.0.0.1:0", "127.0.0.1:0", models.FS
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	gw := make(chan *Gateway, 1)
	opts.Started = func(g *Gateway) { gw <- g }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- RunDemo(ctx, opts) }()
	var once sync.Once
	stop = func(limit time.Duration) {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("demo: %v", err)
				}
			case <-time.After(limit):
				t.Errorf("demo did not stop within %v", limit)
			}
		})
	}
	t.Cleanup(func() { stop(15 * time.Second) })
	select {
	case g = <-gw:
		return g, stop
	case err := <-errc:
		t.Fatalf("demo stopped: %v", err)
	case <-time.After(demoStartLimit):
		t.Fatal("demo did not start")
	}
	return nil, nil
}

// The acceptance check as a test: the demo's UNS topics appear on
// the embedded broker, GOOD, and change over time, within 15 seconds.
func TestDemoPublishesUNS(t *testing.T) {
	var banner strings.Builder
	g, stop := startDemo(t, DemoOptions{Out: &banner, Seed: 7})
	if !strings.Contains(banner.String(), g.BrokerAddr()) || !strings.Contains(banner.String(), "opc.tcp://127.0.0.1:") {
		t.Errorf("banner does not print the broker address %s:\n%s", g.BrokerAddr(), banner.String())
	}
	if u := g.StatusURL(); u == "" || !strings.Contains(banner.String(), "Status page: "+u+"\n") {
		t.Errorf("banner does not print the status page %q:\n%s", u, banner.String())
	}
	sub := subscribe(t, g.BrokerAddr(), "#")
	const speed = "acme/munich/bottling/line1/filler1/speed"
	first := time.Time{}
	var firstVal uns
	waitFor(t, 15*time.Second, "speed to change", func() bool {
		h := sub.history(speed)
		if len(h) == 0 {
			return false
		}
		var u uns
		if err := json.Unmarshal(h[len(h)-1].Payload, &u); err != nil {
			t.Fatalf("bad payload %s: %v", h[len(h)-1].Payload, err)
		}
		if u.Quality != "GOOD" {
			return false
		}
		if first.IsZero() {
			first, firstVal = h[0].At, u
			return false
		}
		return u.TimestampMS > firstVal.TimestampMS && u.Value != firstVal.Value
	})
	for _, topic := range []string{
		"acme/munich/bottling/line1/filler1/temperature",
		"acme/munich/bottling/line1/filler1/state",
		"acme/munich/bottling/line1/filler2/fill_level",
		"acme/munich/bottling/line1/capper1/torque",
		// line 2 over OPC UA (Basic256Sha256 SignAndEncrypt, user name),
		// with node ids by namespace URI, a browse path and an array
		"acme/munich/bottling/line2/filler1/speed",
		"acme/munich/bottling/line2/filler1/running",
		"acme/munich/bottling/line2/filler2/head_weights",
		"acme/munich/bottling/line2/filler2/head_spread",
		"acme/munich/bottling/line2/capper1/runtime",
	} {
		waitFor(t, 5*time.Second, topic, func() bool { u, ok := sub.value(topic); return ok && u.Quality == "GOOD" })
	}
	// The status page shows both sources connected and line 2's tags.
	base := strings.TrimSuffix(g.StatusURL(), "/")
	waitFor(t, 5*time.Second, "both sources connected on the status page", func() bool {
		var st statusReport
		getJSON(t, base+"/api/v1/status", &st)
		return len(st.Sources) == 2 && st.Sources[0].State == "connected" && st.Sources[1].State == "connected" && st.Ready.OK
	})
	var line2 tagsJSON
	getJSON(t, base+"/api/v1/tags?filter=line2/filler1/speed", &line2)
	if len(line2.Tags) != 1 || line2.Tags[0].Quality != "GOOD" {
		t.Errorf("line 2 speed on the status page: %+v", line2)
	}
	if _, ok := sub.raw(speed + "/_meta"); !ok {
		t.Errorf("no _meta for %s", speed)
	}
	waitFor(t, 5*time.Second, "presence", func() bool {
		r, ok := sub.raw(g.PresenceTopic())
		return ok && strings.Contains(string(r.Payload), `"online":true`)
	})

	// A late subscriber gets the retained values at once.
	late := subscribe(t, g.BrokerAddr(), "acme/munich/bottling/line1/+/speed", speed+"/_meta", g.PresenceTopic())
	for _, topic := range []string{speed, speed + "/_meta", g.PresenceTopic()} {
		waitFor(t, 5*time.Second, "retained "+topic, func() bool { r, ok := late.raw(topic); return ok && r.Retained })
	}
	var meta struct{ Datatype, Unit, Source string }
	r, _ := late.raw(speed + "/_meta")
	if err := json.Unmarshal(r.Payload, &meta); err != nil || meta.Unit != "bottles/min" || meta.Source != "plc1" || meta.Datatype == "" {
		t.Errorf("_meta = %s (%v)", r.Payload, err)
	}

	stop(10 * time.Second)
}
