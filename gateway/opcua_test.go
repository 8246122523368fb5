package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/connectors/sim"
)

// The whole path with an OPC UA server next to a Modbus PLC: the server
// stops (its tags go BAD, the PLC's stay GOOD and keep changing), comes
// back with its namespace renumbered, and the nsu= and browse-path tags
// resume without restarting anything.
func TestOPCUAServerRestartIsolated(t *testing.T) {
	ua, err := sim.StartOPCUA(sim.OPCUAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	ua.AddVariable("Line9/Oven/Temp", 180.5)
	ua.AddVariable("Line9/Oven/Door", false)
	plc := listenPLC(t)
	plc.SetHolding(1, 0, 10)

	modelText := `
base: acme/plant/bake
types:
  Oven:
    tags:
      temp: {address: "nsu=urn:unsgate:sim;s=Line9.Oven.Temp", unit: degC}
      door: {address: "/Objects/Line9/Oven/Door"}
      temp_f: {expr: "temp * 9 / 5 + 32", unit: degF}
  Pump:
    tags:
      flow: {address: "holding:0"}
assets:
  line9/oven: {type: Oven, source: ua1}
  line9/pump: {type: Pump, source: plc1}
`
	cfgText := "id: gw-ua\nmodels: [m.yaml]\ndata_dir: " + t.TempDir() + "\nshutdown_timeout: 3s\nbroker: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\nsources:\n" +
		"  ua1: {url: \"" + ua.Endpoint() + "\", security_policy: None, publishing_interval: 100ms, keepalive: 1s, timeout: 1s, backoff: {initial: 50ms, max: 300ms}}\n" +
		"  plc1: {url: \"" + plc.URL() + "\", poll: 100ms, timeout: 300ms}\n"
	_, g := buildGateway(t, cfgText, modelText, nil)
	runGateway(t, g)
	sub := subscribe(t, g.BrokerAddr(), "acme/#")
	const oven, pump = "acme/plant/bake/line9/oven/", "acme/plant/bake/line9/pump/"
	is := func(topic, quality string, value any) func() bool {
		return func() bool {
			u, ok := sub.value(topic)
			return ok && u.Quality == quality && (value == nil || u.Value == value)
		}
	}
	waitFor(t, 10*time.Second, "oven temp GOOD", is(oven+"temp", "GOOD", 180.5))
	waitFor(t, 5*time.Second, "oven door GOOD", is(oven+"door", "GOOD", false))
	waitFor(t, 5*time.Second, "derived temp_f", is(oven+"temp_f", "GOOD", 356.9))
	ua.Set("Line9/Oven/Temp", 181.0)
	waitFor(t, 5*time.Second, "oven temp change", is(oven+"temp", "GOOD", 181.0))

	// Server down: its tags (and the tag derived from them) go BAD; the
	// PLC's keep flowing.
	if err := ua.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "oven temp BAD", is(oven+"temp", "BAD", nil))
	waitFor(t, 5*time.Second, "temp_f BAD", is(oven+"temp_f", "BAD", nil))
	for i := uint16(1); i <= 3; i++ {
		plc.SetHolding(1, 0, 10+i)
		waitFor(t, 3*time.Second, "pump flows while the server is down", is(pump+"flow", "GOOD", float64(10+i)))
	}

	// Back, with another namespace registered first: the sim namespace's
	// index moves, and the variable gets a new node id; nsu= and the
	// browse path follow.
	ua.SetExtraNamespaces("urn:other:vendor")
	ua.Renumber("Line9/Oven/Door", "i=4711")
	ua.Set("Line9/Oven/Temp", 175.25)
	if err := ua.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "oven temp back", is(oven+"temp", "GOOD", 175.25))
	waitFor(t, 5*time.Second, "door back by browse path", is(oven+"door", "GOOD", false))
	ua.Set("Line9/Oven/Door", true)
	waitFor(t, 5*time.Second, "door change after renumbering", is(oven+"door", "GOOD", true))
	if r, ok := sub.raw(oven + "temp"); !ok || !strings.Contains(string(r.Payload), `"unit":"degC"`) {
		t.Errorf("temp payload %s", r.Payload)
	}
}
