package sparkplug

import (
	"math"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
)

const (
	topicNBIRTH = "spBv1.0/munich/NBIRTH/gw1"
	topicNDEATH = "spBv1.0/munich/NDEATH/gw1"
	topicNCMD   = "spBv1.0/munich/NCMD/gw1"
	devFiller   = "bottling.line1.filler"
	devCapper   = "bottling.line1.capper"
	devMixer    = "bottling.line1.mixer"
)

func dtopic(kind, dev string) string { return "spBv1.0/munich/" + kind + "/gw1/" + dev }

// The session: births, then data, every message with the QoS, retain flag
// and seq the specification demands.
func TestBirthsAndData(t *testing.T) {
	b := startBroker(t)
	h := newHost(t, b.Addr())
	r := newRig(t, b, publish.Options{}, nil)

	// NBIRTH comes first on its own; devices wait for their source.
	nb := h.waitFor(0, "NBIRTH", isType("NBIRTH"))
	start := time.Now().Add(-time.Second)
	r.up("plc1")
	r.firstValues(start)
	// Both devices of plc1 are born (in either order) before the next
	// value, so it is live data, not part of a birth.
	h.waitFor(nb, "DBIRTH of capper", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devCapper) })
	h.waitFor(nb, "DBIRTH of filler", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devFiller) })

	r.point(0, model.FloatValue(121), model.QualityGood, start.Add(time.Second))
	last := h.waitFor(nb, "DDATA of filler", func(m rx) bool { return m.Topic == dtopic("DDATA", devFiller) })
	msgs := h.all()[:last+1]

	t.Run("tck-id-topics-nbirth-mqtt", func(t *testing.T) {
		if m := msgs[nb]; m.Topic != topicNBIRTH {
			t.Fatalf("NBIRTH on %s, want %s", m.Topic, topicNBIRTH)
		}
		checkQoS0(t, r.relay, topicNBIRTH)
	})
	t.Run("tck-id-topics-nbirth-seq-num", func(t *testing.T) {
		if p := msgs[nb].Payload; !p.HasSeq || p.Seq != 0 {
			t.Fatalf("NBIRTH seq %d (present %v), want 0", p.Seq, p.HasSeq)
		}
	})
	t.Run("tck-id-topics-nbirth-timestamp", func(t *testing.T) {
		p := msgs[nb].Payload
		if !p.HasTimestamp || math.Abs(float64(int64(p.Timestamp)-time.Now().UnixMilli())) > 10000 {
			t.Fatalf("NBIRTH timestamp %d, want now", p.Timestamp)
		}
	})
	t.Run("tck-id-topics-nbirth-bdseq-included", func(t *testing.T) {
		m, ok := metricByName(msgs[nb].Payload, MetricBdSeq)
		if !ok || m.Datatype != TypeInt64 || m.Value != metricLongValue || m.Long != 0 {
			t.Fatalf("bdSeq metric %+v, want Int64 0 on the first connect", m)
		}
	})
	t.Run("tck-id-topics-nbirth-rebirth-metric", func(t *testing.T) {
		m, ok := metricByName(msgs[nb].Payload, MetricRebirth)
		if !ok || m.Datatype != TypeBoolean || m.Value != metricBooleanValue || m.Bool || m.HasAlias {
			t.Fatalf("rebirth metric %+v, want Boolean false without alias", m)
		}
	})
	t.Run("tck-id-payloads-dbirth-seq", func(t *testing.T) {
		// Every message after NBIRTH carries seq = previous + 1.
		want := uint64(0)
		for _, m := range msgs[nb+1:] {
			want++
			if !m.Payload.HasSeq || m.Payload.Seq != want {
				t.Fatalf("%s seq %d, want %d", m.Topic, m.Payload.Seq, want)
			}
		}
	})
	t.Run("tck-id-topics-dbirth-mqtt", func(t *testing.T) {
		n := 0
		for _, m := range msgs[nb+1:] {
			if msgType(m.Topic) == "DBIRTH" {
				n++
				checkQoS0(t, r.relay, m.Topic)
			}
		}
		if n != 2 {
			t.Fatalf("%d DBIRTH, want 2 (filler, capper; mixer's source is not up)", n)
		}
	})
	t.Run("tck-id-payloads-dbirth-metrics", func(t *testing.T) {
		var birth Payload
		for _, m := range msgs {
			if m.Topic == dtopic("DBIRTH", devFiller) {
				birth = m.Payload
			}
		}
		want := map[string]DataType{"speed": TypeDouble, "counters/good": TypeInt16, "state": TypeString, "alarm": TypeBoolean}
		if len(birth.Metrics) != len(want) {
			t.Fatalf("DBIRTH has %d metrics, want %d", len(birth.Metrics), len(want))
		}
		aliases := map[uint64]bool{}
		for _, m := range birth.Metrics {
			if !m.HasName || !m.HasAlias || !m.HasDatatype || !m.HasTimestamp || m.Datatype != want[m.Name] {
				t.Errorf("metric %+v: want name, alias, timestamp and datatype %s", m, want[m.Name])
			}
			if aliases[m.Alias] {
				t.Errorf("alias %d twice", m.Alias)
			}
			aliases[m.Alias] = true
			if m.IsNull || m.Value == 0 {
				t.Errorf("metric %s has no value", m.Name)
			}
		}
		good, _ := metricByName(birth, "counters/good")
		if good.Value != metricIntValue || int32(good.Int) != -12 {
			t.Errorf("Int16 -12 sent as field %d value %d", good.Value, good.Int)
		}
	})
	t.Run("tck-id-topics-ddata-mqtt", func(t *testing.T) {
		m := msgs[last]
		checkQoS0(t, r.relay, m.Topic)
		if len(m.Payload.Metrics) != 1 {
			t.Fatalf("DDATA with %d metrics, want the one that changed", len(m.Payload.Metrics))
		}
		d := m.Payload.Metrics[0]
		if d.HasName || !d.HasAlias || !d.HasTimestamp || d.Value != metricDoubleValue || d.Double != 121 || d.IsHistorical {
			t.Fatalf("DDATA metric %+v: want alias only, timestamp, double 121, live", d)
		}
	})
	r.stop()
	nd := h.waitFor(last, "NDEATH after a clean stop", func(m rx) bool { return m.Topic == topicNDEATH })
	t.Run("tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath", func(t *testing.T) {
		pubs := r.relay.publishesTo(topicNDEATH)
		if len(pubs) != 1 || pubs[0].QoS != 1 || pubs[0].Retain {
			t.Fatalf("NDEATH publishes %+v, want one at QoS 1 not retained", pubs)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			sent := r.relay.sent()
			last := sent[len(sent)-1]
			if last.Type == 14 && last.Reason == 0x04 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("last packet %+v, want DISCONNECT with reason 0x04 (keep the Will)", last)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if m := h.all()[nd]; m.Payload.HasSeq {
			t.Fatal("NDEATH carries a seq")
		}
	})
}

// checkQoS0 checks that every publish to topic went out at QoS 0 without
// retain, as births and data must.
func checkQoS0(t *testing.T, r *relay, topic string) {
	t.Helper()
	pubs := r.publishesTo(topic)
	if len(pubs) == 0 {
		t.Fatalf("nothing published to %s", topic)
	}
	for _, p := range pubs {
		if p.QoS != 0 || p.Retain {
			t.Fatalf("%s published with QoS %d retain %v, want QoS 0 not retained", topic, p.QoS, p.Retain)
		}
	}
}
