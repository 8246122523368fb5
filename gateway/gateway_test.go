package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/unsgate/unsgate/connectors/sim"
)

const pumpModel = `
base: acme/plant/water
types:
  Pump:
    tags:
      flow:     {address: "holding:0", type: uint16, expr: "raw / 10.0", unit: m3/h}
      pressure: {address: "input:0", type: int16, unit: mbar}
      running:  {address: "coil:0"}
      per_hour: {expr: "flow * 2"}
assets:
  line1/pump1: {type: Pump, source: plc1}
  line1/pump2: {type: Pump, source: plc2}
`

// startGateway runs a gateway for model text against sources named in
// urls, with an embedded broker on a free port.
func startGateway(t *testing.T, modelText string, urls map[string]string) (*Gateway, context.CancelFunc) {
	t.Helper()
	text := "id: gw-test\nmodels: [m.yaml]\nshutdown_timeout: 3s\nbroker: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\nsources:\n"
	for name, u := range urls {
		text += "  " + name + ": {url: \"" + u + "\", poll: 100ms, timeout: 300ms, backoff: {initial: 50ms, max: 200ms}}\n"
	}
	_, g := buildGateway(t, text, modelText, nil)
	return g, runGateway(t, g)
}

// One PLC going down marks its tags BAD (and the derived tag depending on
// them), leaves the other PLC's tags GOOD, and recovers by itself.
func TestPLCDownThenUp(t *testing.T) {
	plc1 := listenPLC(t)
	plc2 := listenPLC(t)
	plc1.SetHolding(1, 0, 123)
	plc2.SetHolding(1, 0, 456)
	g, _ := startGateway(t, pumpModel, map[string]string{"plc1": plc1.URL(), "plc2": plc2.URL()})
	sub := subscribe(t, g.BrokerAddr(), "acme/#")

	const p1 = "acme/plant/water/line1/pump1/"
	const p2 = "acme/plant/water/line1/pump2/"
	quality := func(topic, want string) func() bool {
		return func() bool { u, ok := sub.value(topic); return ok && u.Quality == want }
	}
	waitFor(t, 5*time.Second, "pump1 flow GOOD", quality(p1+"flow", "GOOD"))
	waitFor(t, 5*time.Second, "pump2 flow GOOD", quality(p2+"flow", "GOOD"))
	if u, _ := sub.value(p1 + "flow"); u.Value != 12.3 {
		t.Errorf("pump1 flow = %v, want 12.3", u.Value)
	}
	waitFor(t, 5*time.Second, "pump1 per_hour", func() bool { u, ok := sub.value(p1 + "per_hour"); return ok && u.Value == 24.6 })

	addr := plc1.Addr()
	plc1.Close()
	for _, tag := range []string{"flow", "pressure", "running", "per_hour"} {
		waitFor(t, 5*time.Second, "pump1 "+tag+" BAD", func() bool {
			u, ok := sub.value(p1 + tag)
			return ok && u.Quality == "BAD" && u.Value == nil
		})
	}
	// pump2 keeps being read: change a register and see it arrive.
	plc2.SetHolding(1, 0, 789)
	waitFor(t, 5*time.Second, "pump2 new value while pump1 is down", func() bool {
		u, ok := sub.value(p2 + "flow")
		return ok && u.Quality == "GOOD" && u.Value == 78.9
	})

	plc1b, err := sim.Listen(addr)
	if err != nil {
		t.Fatalf("restart PLC on %s: %v", addr, err)
	}
	defer plc1b.Close()
	plc1b.SetHolding(1, 0, 321)
	waitFor(t, 10*time.Second, "pump1 GOOD again", func() bool {
		u, ok := sub.value(p1 + "flow")
		return ok && u.Quality == "GOOD" && u.Value == 32.1
	})
	waitFor(t, 5*time.Second, "pump1 per_hour GOOD again", quality(p1+"per_hour", "GOOD"))
}
