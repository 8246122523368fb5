package sparkplug

import (
	"fmt"
	"testing"
	"time"

	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/internal/mosquitto"
)

func bdSeqOf(t *testing.T, p Payload) uint64 {
	t.Helper()
	m, ok := metricByName(p, MetricBdSeq)
	if !ok || m.Value != metricLongValue || m.Datatype != TypeInt64 {
		t.Fatalf("no Int64 bdSeq metric in %+v", p)
	}
	return m.Long
}

// The Will is the NDEATH with the session's bdSeq; a new connection
// increments bdSeq, and a restarted gateway goes on from the saved one.
func TestBdSeqAcrossReconnectAndRestart(t *testing.T) {
	b := startBroker(t)
	h := newHost(t, b.Addr())
	dir := t.TempDir()
	r := newRig(t, b, publish.Options{}, func(c *Config) { c.StateDir = dir })

	nb := h.waitFor(0, "NBIRTH", isType("NBIRTH"))
	msgs := h.all()
	if got := bdSeqOf(t, msgs[nb].Payload); got != r.relay.connects()-1 {
		t.Fatalf("first bdSeq %d, want %d: 0 at the first CONNECT, +1 at each further one (last error: %q)", got, r.relay.connects()-1, r.s.Status().LastError)
	}

	// Lose the connection without DISCONNECT: the broker publishes the Will.
	r.relay.cut()
	nd := h.waitFor(nb, "NDEATH (the Will)", isType("NDEATH"))
	nb2 := h.waitFor(nd, "NBIRTH after the reconnect", isType("NBIRTH"))
	msgs = h.all()
	t.Run("tck-id-topics-ndeath-payload", func(t *testing.T) {
		m := msgs[nd]
		if m.Topic != topicNDEATH || m.Payload.HasSeq || len(m.Payload.Metrics) != 1 || bdSeqOf(t, m.Payload) != bdSeqOf(t, msgs[nb].Payload) {
			t.Fatalf("NDEATH %s seq present %v metrics %d; want one bdSeq metric (0), no seq", m.Topic, m.Payload.HasSeq, len(m.Payload.Metrics))
		}
	})
	t.Run("tck-id-payloads-ndeath-will-message-qos", func(t *testing.T) {
		for _, p := range r.relay.sent() {
			if p.Type == 1 && (!p.WillFlag || p.WillQoS != 1 || p.WillRetain || !p.CleanStart) {
				t.Fatalf("CONNECT %+v: want clean start and a Will with QoS 1, not retained", p)
			}
		}
	})
	t.Run("tck-id-topics-nbirth-bdseq-increment", func(t *testing.T) {
		// +1 per CONNECT (a connection that failed before its births
		// counts too).
		connects := r.relay.connects()
		if got := bdSeqOf(t, msgs[nb2].Payload); got != connects-1 || got == 0 {
			t.Fatalf("bdSeq after reconnect %d, want %d (%d CONNECTs)", got, connects-1, connects)
		}
		if msgs[nb2].Payload.Seq != 0 {
			t.Fatalf("NBIRTH seq %d, want 0", msgs[nb2].Payload.Seq)
		}
	})

	// A clean stop publishes the NDEATH itself, with the same bdSeq.
	r.stop()
	nd2 := h.waitFor(nb2, "NDEATH on a clean stop", isType("NDEATH"))
	last := bdSeqOf(t, h.all()[nb2].Payload)
	if got := bdSeqOf(t, h.all()[nd2].Payload); got != last {
		t.Fatalf("clean-stop NDEATH bdSeq %d, want %d (the NBIRTH's)", got, last)
	}

	t.Run("tck-id-operational-behavior-edge-node-bdseq-persisted", func(t *testing.T) {
		// A new process on the same state folder goes on from 1.
		r2 := newRig(t, b, publish.Options{}, func(c *Config) { c.StateDir = dir })
		nb3 := h.waitFor(nd2, "NBIRTH of the restarted node", isType("NBIRTH"))
		if got := bdSeqOf(t, h.all()[nb3].Payload); got != last+1 {
			t.Fatalf("bdSeq after restart %d, want %d", got, last+1)
		}
		r2.stop()
	})
}

// bdSeq wraps from 255 to 0.
func TestBdSeqWraps(t *testing.T) {
	dir := t.TempDir()
	if err := writeFileAtomic(dir+"/bdseq", []byte("254\n")); err != nil {
		t.Fatal(err)
	}
	b, err := loadBdSeq(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{255, 0, 1} {
		if got, err := b.next(); err != nil || got != want {
			t.Fatalf("next = %d, %v; want %d", got, err, want)
		}
	}
	if err := writeFileAtomic(dir+"/bdseq", []byte("300")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadBdSeq(dir); err == nil {
		t.Fatal("a bdseq file saying 300 was accepted")
	}
}

// One seq counter for births, data and deaths, +1 per message, 255 -> 0.
func TestSeqWrapsAcrossMessageTypes(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{}, nil)
	r.up("plc1")
	r.up("plc2")
	t0 := time.Now()
	r.firstValues(t0)
	idx := h.waitFor(nb, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })
	for i := 1; i <= 300; i++ {
		// One point at a time, so that each goes out in its own DDATA.
		r.point(6, model.IntValue(int64(i%100)), model.QualityGood, t0.Add(time.Duration(i)*time.Millisecond))
		idx = h.waitFor(idx+1, "DDATA of mixer", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
	}
	r.down("plc1")
	h.waitFor(nb, "DDEATH", isType("DDEATH"))
	msgs := h.all()[nb:]
	t.Run("tck-id-payloads-sequence-num-incrementing", func(t *testing.T) {
		want := uint64(0)
		wrapped := false
		for i, m := range msgs {
			if msgType(m.Topic) == "NDEATH" || msgType(m.Topic) == "NCMD" {
				continue
			}
			if i > 0 {
				want = (want + 1) % 256
			}
			if m.Payload.Seq != want || !m.Payload.HasSeq {
				t.Fatalf("message %d (%s): seq %d, want %d", i, m.Topic, m.Payload.Seq, want)
			}
			if i > 0 && want == 0 {
				wrapped = true
			}
		}
		if !wrapped {
			t.Fatalf("seq never wrapped in %d messages", len(msgs))
		}
	})
}

// Several values of one metric travel in time order, never two with the
// same timestamp in one message.
func TestSeveralValuesOfOneMetric(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{}, nil)
	r.up("plc2")
	t0 := time.Now().Add(-time.Minute)
	r.point(6, model.IntValue(1), model.QualityGood, t0)
	h.waitFor(nb, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })
	// One batch: rising, equal and falling timestamps.
	pts := []model.Point{}
	for i, off := range []int{1, 2, 2, 3, 1, 4} {
		pts = append(pts, model.Point{Meta: r.tags[6], Value: model.IntValue(int64(10 + i)), Quality: model.QualityGood,
			Time: t0.Add(time.Duration(off) * time.Second)})
	}
	r.f.Publish(pts)
	var got []int32
	idx := nb
	for len(got) < len(pts) {
		idx = h.waitFor(idx+1, "DDATA of mixer", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
		m := h.all()[idx]
		last := uint64(0)
		for _, mt := range m.Payload.Metrics {
			if mt.Timestamp <= last {
				t.Fatalf("tck-id-payloads-metric-timestamp-in-order: timestamps %d then %d in one DDATA", last, mt.Timestamp)
			}
			last = mt.Timestamp
			got = append(got, int32(mt.Int))
		}
	}
	if fmt.Sprint(got) != "[10 11 12 13 14 15]" {
		t.Fatalf("values %v, want [10 11 12 13 14 15] in order", got)
	}
}

// A value the birth carried that goes stale is a live change of its
// quality (same value, same timestamp, Quality 500), not history: a host
// files historical values away and would never show the tag as stale.
func TestStaleMarkOfBornValueIsLive(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{}, nil)
	r.up("plc2")
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	r.point(6, model.IntValue(7), model.QualityGood, t0)
	db := h.waitFor(nb, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })
	r.f.Publish([]model.Point{{Meta: r.tags[6], Value: model.IntValue(7), Quality: model.QualityGood, Stale: true, Time: t0}})
	i := h.waitFor(db, "DDATA of mixer", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
	mt := h.all()[i].Payload.Metrics[0]
	q, ok := mt.Properties[QualityKey]
	if !ok || q.Int != QualityStale || int32(mt.Int) != 7 || mt.Timestamp != uint64(t0.UnixMilli()) {
		t.Fatalf("stale DDATA metric %+v, want value 7 at the birth's timestamp with Quality 500", mt)
	}
	if mt.IsHistorical {
		t.Fatal("tck-id-operational-behavior-edge-node-historical: the stale mark of the current value is flagged is_historical")
	}
}

// Rebirth on NCMD: NBIRTH with seq 0 and the same bdSeq, then every
// DBIRTH, without a new connection; unknown NCMD metrics and malformed
// payloads are tolerated.
func TestRebirthOnNCMD(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{}, nil)
	r.up("plc1")
	r.firstValues(time.Now())
	h.waitFor(nb, "DBIRTH of capper", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devCapper) })

	h.publish(topicNCMD, []byte{0xff, 0x01}, false) // malformed
	h.publish(topicNCMD, ncmd("Node Control/Reboot", true), false)
	h.publish(topicNCMD, ncmd(MetricRebirth, true), false)
	nb2 := h.waitFor(nb+1, "NBIRTH after NCMD", isType("NBIRTH"))
	d1 := h.waitFor(nb2, "DBIRTH of filler", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devFiller) })
	d2 := h.waitFor(nb2, "DBIRTH of capper", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devCapper) })
	msgs := h.all()
	t.Run("tck-id-operational-behavior-edge-node-rebirth", func(t *testing.T) {
		if msgs[nb2].Payload.Seq != 0 || bdSeqOf(t, msgs[nb2].Payload) != bdSeqOf(t, msgs[nb].Payload) {
			t.Fatalf("rebirth NBIRTH seq %d bdSeq %d, want seq 0 and the first bdSeq", msgs[nb2].Payload.Seq, bdSeqOf(t, msgs[nb2].Payload))
		}
		if s := msgs[d1].Payload.Seq + msgs[d2].Payload.Seq; s != 3 {
			t.Fatalf("DBIRTH seqs %d and %d, want 1 and 2", msgs[d1].Payload.Seq, msgs[d2].Payload.Seq)
		}
		if r.s.Counters().BadCommands != 1 {
			t.Fatalf("bad commands %d, want 1 (the malformed NCMD)", r.s.Counters().BadCommands)
		}
		if r.s.Counters().Rebirths != 1 {
			t.Fatalf("%d rebirths counted, want 1", r.s.Counters().Rebirths)
		}
	})
	// Values are the newest ones.
	r.point(0, model.FloatValue(99), model.QualityGood, time.Now())
	i := h.waitFor(d2, "DDATA of filler", func(m rx) bool { return m.Topic == dtopic("DDATA", devFiller) })
	if m := h.all()[i].Payload.Metrics[0]; m.Double != 99 || m.IsHistorical {
		t.Fatalf("DDATA after rebirth %+v", m)
	}
}

// ncmd encodes an NCMD payload with one Boolean metric.
func ncmd(name string, v bool) []byte {
	var m []byte
	m = appendString(m, metricName, name)
	m = appendVarint(m, metricDatatype, uint64(TypeBoolean))
	m = appendBool(m, metricBooleanValue, v)
	b := appendVarint(nil, payloadTimestamp, nowMs())
	return appendBytes(b, payloadMetrics, m)
}

// With a primary host configured, no birth until its STATE says online;
// an offline STATE with a newer timestamp ends the session with NDEATH and
// the node reconnects with the next bdSeq and waits again.
func TestPrimaryHostState(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			b := startBroker(t)
			h := newHost(t, b.Addr())
			stateTopic := "spBv1.0/STATE/scada1"
			online := func(ts int64) []byte { return fmt.Appendf(nil, `{"online":true,"timestamp":%d}`, ts) }
			offline := func(ts int64) []byte { return fmt.Appendf(nil, `{"online":false,"timestamp":%d}`, ts) }
			if legacy {
				stateTopic = "STATE/scada1"
				online = func(int64) []byte { return []byte("ONLINE") }
				offline = func(int64) []byte { return []byte("OFFLINE") }
			}
			r := newRig(t, b, publish.Options{}, func(c *Config) { c.PrimaryHost = "scada1" })
			r.up("plc1")
			r.firstValues(time.Now())
			waitConnects(t, r.s, 1)
			time.Sleep(300 * time.Millisecond)
			t.Run("tck-id-message-flow-edge-node-birth-publish-phid-wait", func(t *testing.T) {
				for _, m := range h.all() {
					if msgType(m.Topic) == "NBIRTH" || msgType(m.Topic) == "DBIRTH" {
						t.Fatalf("%s before the primary host was online", m.Topic)
					}
				}
			})
			h.publish(stateTopic, online(1000), true)
			nb := h.waitFor(0, "NBIRTH once the host is online", isType("NBIRTH"))
			h.waitFor(nb, "DBIRTH", isType("DBIRTH"))
			born := bdSeqOf(t, h.all()[nb].Payload)
			connects := r.s.Status().Connects
			if !legacy {
				// An older offline STATE is ignored.
				h.publish(stateTopic, offline(999), true)
				time.Sleep(200 * time.Millisecond)
				if n := r.s.Status().Connects; n != connects {
					t.Fatalf("an older STATE caused a reconnect (%d connects, was %d)", n, connects)
				}
			}
			h.publish(stateTopic, offline(2000), true)
			t.Run("tck-id-operational-behavior-edge-node-termination-host-offline", func(t *testing.T) {
				nd := h.waitFor(nb, "NDEATH after the host went offline", isType("NDEATH"))
				if got := bdSeqOf(t, h.all()[nd].Payload); got != born {
					t.Fatalf("NDEATH bdSeq %d, want %d (the NBIRTH's)", got, born)
				}
				waitConnects(t, r.s, connects+1)
				time.Sleep(200 * time.Millisecond)
				for _, m := range h.all()[nd:] {
					if msgType(m.Topic) == "NBIRTH" {
						t.Fatal("NBIRTH while the host is offline")
					}
				}
				h.publish(stateTopic, online(3000), true)
				nb2 := h.waitFor(nd, "NBIRTH when the host is back", isType("NBIRTH"))
				if got := bdSeqOf(t, h.all()[nb2].Payload); got <= born {
					t.Fatalf("bdSeq after the host came back %d, want more than %d", got, born)
				}
			})
		})
	}
}

func waitConnects(t *testing.T, s *Sink, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().Connects < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connects, want %d", s.Status().Connects, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A source going down: its points go BAD, then DDEATH; when it returns,
// DBIRTH with the new values before any DDATA. Other devices go on.
func TestDeviceDeathAndRebirthAroundSourceOutage(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{}, nil)
	r.up("plc1")
	r.up("plc2")
	t0 := time.Now()
	r.firstValues(t0)
	h.waitFor(nb, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })

	// plc1 fails: the supervisor publishes its tags BAD, then the event.
	bad := []model.Point{}
	for i := 0; i < 6; i++ {
		bad = append(bad, model.Point{Meta: r.tags[i], Quality: model.QualityBad, Time: t0.Add(time.Second)})
	}
	r.f.Publish(bad)
	r.down("plc1")
	dd := h.waitFor(nb, "DDEATH of filler", func(m rx) bool { return m.Topic == dtopic("DDEATH", devFiller) })
	h.waitFor(nb, "DDEATH of capper", func(m rx) bool { return m.Topic == dtopic("DDEATH", devCapper) })
	msgs := h.all()
	t.Run("tck-id-topics-ddeath-seq-num", func(t *testing.T) {
		m := msgs[dd]
		if !m.Payload.HasSeq || !m.Payload.HasTimestamp || m.QoS != 0 || m.Retain {
			t.Fatalf("DDEATH %+v qos %d retain %v", m.Payload, m.QoS, m.Retain)
		}
		if msgs[dd-1].Payload.Seq+1 != m.Payload.Seq {
			t.Fatalf("DDEATH seq %d after %d", m.Payload.Seq, msgs[dd-1].Payload.Seq)
		}
	})
	t.Run("tck-id-payloads-metric-quality-bad-is-null", func(t *testing.T) {
		var bads int
		for _, m := range msgs[nb:dd] {
			if m.Topic != dtopic("DDATA", devFiller) {
				continue
			}
			for _, mt := range m.Payload.Metrics {
				q, ok := mt.Properties[QualityKey]
				if !mt.IsNull || !ok || q.Type != TypeInt32 || q.Int != QualityBad || mt.Value != 0 {
					t.Fatalf("BAD metric %+v", mt)
				}
				bads++
			}
		}
		if bads != 4 {
			t.Fatalf("%d BAD filler metrics before DDEATH, want 4", bads)
		}
	})
	// The other device keeps publishing; points of the dead ones are not sent.
	r.point(6, model.IntValue(5), model.QualityGood, t0.Add(2*time.Second))
	r.point(0, model.FloatValue(1), model.QualityGood, t0.Add(2*time.Second)) // a heartbeat of a dead tag
	h.waitFor(dd, "DDATA of mixer", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
	// The heartbeat may come in the sink's next batch: it must be handled
	// (skipped) before plc1 is back, or the device is up again by then.
	deadline := time.Now().Add(10 * time.Second)
	for r.s.Counters().Skipped < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the dead tag's heartbeat was not skipped")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// plc1 is back.
	r.up("plc1")
	r.firstValues(t0.Add(3 * time.Second))
	db := h.waitFor(dd, "DBIRTH of filler", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devFiller) })
	t.Run("tck-id-topics-dbirth-after-ddeath", func(t *testing.T) {
		msgs := h.all()
		for _, m := range msgs[dd:db] {
			if m.Topic == dtopic("DDATA", devFiller) {
				t.Fatalf("DDATA of a dead device before its DBIRTH")
			}
		}
		speed, _ := metricByName(msgs[db].Payload, "speed")
		if speed.IsNull || speed.Double != 120.5 {
			t.Fatalf("DBIRTH speed %+v, want the new value 120.5", speed)
		}
		if r.s.Counters().Skipped != 1 {
			t.Fatalf("skipped %d, want 1 (the dead tag's heartbeat)", r.s.Counters().Skipped)
		}
	})
}

// Points queued while the broker was away are sent after the new births
// with is_historical; the births carry the newest values.
func TestHistoricalReplayAfterBrokerOutage(t *testing.T) {
	h, r, nb := startNode(t, publish.Options{StoreDir: t.TempDir()}, nil)
	r.up("plc2")
	t0 := time.Now().Add(-time.Minute)
	r.point(6, model.IntValue(0), model.QualityGood, t0)
	h.waitFor(nb, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })

	r.relay.setDown(true)
	deadline := time.Now().Add(5 * time.Second)
	for r.s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("sink still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * 100 * time.Millisecond) // the Fanout tells the queue within 100 ms
	for i := 1; i <= 20; i++ {
		r.point(6, model.IntValue(int64(i)), model.QualityGood, t0.Add(time.Duration(i)*time.Second))
	}
	nd := h.waitFor(nb, "NDEATH (Will)", isType("NDEATH"))
	r.relay.setDown(false)
	nb2 := h.waitFor(nd, "NBIRTH after the outage", isType("NBIRTH"))
	db := h.waitFor(nb2, "DBIRTH of mixer", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })
	var hist []int32
	idx := db
	for len(hist) < 19 {
		idx = h.waitFor(idx+1, "historical DDATA", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
		for _, mt := range h.all()[idx].Payload.Metrics {
			if !mt.IsHistorical {
				t.Fatalf("tck-id-operational-behavior-edge-node-historical: replayed value %d not historical", int32(mt.Int))
			}
			hist = append(hist, int32(mt.Int))
		}
	}
	level, _ := metricByName(h.all()[db].Payload, "level")
	if int32(level.Int) != 20 {
		t.Fatalf("DBIRTH level %d, want the newest value 20", int32(level.Int))
	}
	if fmt.Sprint(hist) != "[1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19]" {
		t.Fatalf("historical values %v", hist)
	}
	// Live data after the replay is not historical.
	r.point(6, model.IntValue(21), model.QualityGood, t0.Add(21*time.Second))
	i := h.waitFor(idx+1, "live DDATA", func(m rx) bool { return m.Topic == dtopic("DDATA", devMixer) })
	if m := h.all()[i].Payload.Metrics[0]; m.IsHistorical || int32(m.Int) != 21 {
		t.Fatalf("live DDATA %+v", m)
	}
}

// An untyped tag (an OPC UA node without datatype) is born with the type of
// its first value; a value of another type later causes a rebirth.
func TestUntypedMetricRebirthOnTypeChange(t *testing.T) {
	b := startBroker(t)
	h := newHost(t, b.Addr())
	r := newRig(t, b, publish.Options{}, nil)
	r.tags[6].Datatype, r.tags[6].Width = model.KindNull, 0
	r.f.SetTags(r.tags)
	nb := h.waitFor(0, "NBIRTH", isType("NBIRTH"))
	r.up("plc2")
	t0 := time.Now()
	r.point(6, model.FloatValue(1.5), model.QualityGood, t0)
	// A birth before the value came says String (unknown yet) and is
	// followed by a rebirth; the birth that carries the value says Double.
	db := h.waitFor(nb, "DBIRTH of mixer with a Double", func(m rx) bool {
		l, _ := metricByName(m.Payload, "level")
		return m.Topic == dtopic("DBIRTH", devMixer) && l.Datatype == TypeDouble && l.Double == 1.5
	})
	r.point(6, model.StringValue("full"), model.QualityGood, t0.Add(time.Second))
	db2 := h.waitFor(db+1, "DBIRTH after the type change", func(m rx) bool { return m.Topic == dtopic("DBIRTH", devMixer) })
	if m, _ := metricByName(h.all()[db2].Payload, "level"); m.Datatype != TypeString || m.String != "full" {
		t.Fatalf("reborn metric %+v, want String full", m)
	}
	if r.s.Counters().Rebirths == 0 {
		t.Fatal("no rebirth counted")
	}
}

// Aliases stay the same across restarts and model changes; DATA without
// aliases carries names.
func TestAliasesStable(t *testing.T) {
	dir := t.TempDir()
	a1, _ := loadAliases(dir)
	ts1 := buildTagset(testTags(), "acme/munich", "g", "e", a1)
	if err := a1.save(); err != nil {
		t.Fatal(err)
	}
	// A new model: one tag less, one new; loaded again from disk.
	tags := testTags()
	tags = append(tags[1:], &model.TagMeta{Topic: "acme/munich/bottling/line1/filler/new", Asset: "acme/munich/bottling/line1/filler", Name: "new", Source: "plc1", Datatype: model.KindBool, Index: 7})
	a2, err := loadAliases(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts2 := buildTagset(tags, "acme/munich", "g", "e", a2)
	seen := map[uint64]string{}
	for topic, m := range ts2.byTopic {
		if o := ts1.byTopic[topic]; o != nil && o.alias != m.alias {
			t.Errorf("%s: alias %d became %d", topic, o.alias, m.alias)
		}
		if prev, dup := seen[m.alias]; dup {
			t.Errorf("tck-id-payloads-alias-uniqueness: alias %d for %s and %s", m.alias, prev, topic)
		}
		seen[m.alias] = topic
	}
	if n := ts2.byTopic["acme/munich/bottling/line1/filler/new"].alias; n != 8 {
		t.Errorf("new metric alias %d, want 8 (never reusing the removed one's)", n)
	}

	h, r, nb := startNode(t, publish.Options{}, func(c *Config) { c.NoAliases = true })
	r.up("plc2")
	r.point(6, model.IntValue(1), model.QualityGood, time.Now())
	r.point(6, model.IntValue(2), model.QualityGood, time.Now().Add(time.Second))
	i := h.waitFor(nb, "DDATA", isType("DDATA"))
	if m := h.all()[i].Payload.Metrics[0]; m.HasAlias || m.Name != "level" {
		t.Fatalf("DDATA without aliases: %+v", m)
	}
}

// TestMosquitto runs the conformance tests against an independent broker,
// Debian's mosquitto (CI interop, UNSGATE_INTEROP=1); startBroker picks it
// by the test's name.
func TestMosquitto(t *testing.T) {
	if !mosquitto.Enabled() {
		t.Skip("interop test against mosquitto: set UNSGATE_INTEROP=1 (after .ci/interop-mqtt.sh installed it)")
	}
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"BirthsAndData", TestBirthsAndData},
		{"BdSeqAcrossReconnectAndRestart", TestBdSeqAcrossReconnectAndRestart},
		{"BdSeqWraps", TestBdSeqWraps},
		{"SeqWrapsAcrossMessageTypes", TestSeqWrapsAcrossMessageTypes},
		{"SeveralValuesOfOneMetric", TestSeveralValuesOfOneMetric},
		{"StaleMarkOfBornValueIsLive", TestStaleMarkOfBornValueIsLive},
		{"RebirthOnNCMD", TestRebirthOnNCMD},
		{"PrimaryHostState", TestPrimaryHostState},
		{"DeviceDeathAndRebirthAroundSourceOutage", TestDeviceDeathAndRebirthAroundSourceOutage},
		{"HistoricalReplayAfterBrokerOutage", TestHistoricalReplayAfterBrokerOutage},
		{"UntypedMetricRebirthOnTypeChange", TestUntypedMetricRebirthOnTypeChange},
		{"AliasesStable", TestAliasesStable},
	} {
		t.Run(tc.name, tc.run)
	}
}
