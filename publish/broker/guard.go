package broker

import (
	"bytes"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// guard works around two concurrency bugs of mochi v2.7.9 (also in v2.6.6)
// that would otherwise take down the gateway that embeds the broker.
//
// Deadlock delivering QoS 1/2 to subscribers: after every packet from a
// client with messages in flight, mochi takes the client's in-flight read
// lock twice on one goroutine (NextImmediate calls GetAll); a publisher
// adding a message for that client between the two waits for the write lock
// and blocks the second read lock forever. Under load this happens within
// seconds (unsgate bench found it). The guard grants every subscription QoS 0
// (the SUBACK says so), so no message to a subscriber is ever in flight.
// Publishers still get QoS 1 acknowledgements, which is what the gateway's
// sink counts on, and subscribers still get every tag's latest value as a
// retained message when they (re)subscribe.
//
// Data race on retained messages: storing a retained message writes the
// topic node's retained path under the index lock, but a SUBSCRIBE scanning
// for retained messages reads it without any lock; a torn read there can
// crash the process. The guard makes retained stores exclusive and retained
// scans shared:
//
//   - a valid PUBLISH with retain, and a will with retain, hold the write
//     lock while mochi processes them;
//   - a valid SUBSCRIBE holds the read lock (subscribes still run in
//     parallel with each other and with non-retained publishes).
//
// mochi handles a client's packets one by one on that client's goroutine,
// calling OnPacketRead before and OnPacketProcessed after each, so the lock
// taken in one is released in the other on the same goroutine. Packets that
// fail validation never reach OnPacketProcessed, so they are validated here
// first and not locked. Delayed wills and $SYS topics are stored without
// the guard; neither is used by the gateway.
type guard struct {
	mochi.HookBase
	topicAliasMax uint16

	rw   sync.RWMutex
	mu   sync.Mutex
	held map[*mochi.Client]lockMode
}

type lockMode uint8

const (
	unlocked lockMode = iota
	readLocked
	writeLocked
)

func newGuard(topicAliasMax uint16) *guard {
	return &guard{topicAliasMax: topicAliasMax, held: map[*mochi.Client]lockMode{}}
}

func (g *guard) ID() string { return "unsgate-guard" }

func (g *guard) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnSubscribe, mochi.OnPacketRead, mochi.OnPacketProcessed, mochi.OnWill, mochi.OnWillSent, mochi.OnDisconnect}, []byte{b})
}

func (g *guard) lock(cl *mochi.Client, m lockMode) {
	if m == writeLocked {
		g.rw.Lock()
	} else {
		g.rw.RLock()
	}
	g.mu.Lock()
	g.held[cl] = m
	g.mu.Unlock()
}

func (g *guard) unlock(cl *mochi.Client) {
	g.mu.Lock()
	m := g.held[cl]
	delete(g.held, cl)
	g.mu.Unlock()
	switch m {
	case writeLocked:
		g.rw.Unlock()
	case readLocked:
		g.rw.RUnlock()
	}
}

func (g *guard) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Retain && pk.PublishValidate(g.topicAliasMax) == packets.CodeSuccess {
			g.lock(cl, writeLocked)
		}
	case packets.Subscribe:
		if pk.SubscribeValidate() == packets.CodeSuccess {
			g.lock(cl, readLocked)
		}
	}
	return pk, nil
}

// OnSubscribe grants QoS 0 to every subscription (see guard).
func (g *guard) OnSubscribe(_ *mochi.Client, pk packets.Packet) packets.Packet {
	filters := make(packets.Subscriptions, len(pk.Filters))
	for i, f := range pk.Filters {
		f.Qos = 0
		filters[i] = f
	}
	pk.Filters = filters
	return pk
}

func (g *guard) OnPacketProcessed(cl *mochi.Client, _ packets.Packet, _ error) { g.unlock(cl) }

func (g *guard) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	if will.Retain && will.WillDelayInterval == 0 {
		g.lock(cl, writeLocked)
	}
	return will, nil
}

func (g *guard) OnWillSent(cl *mochi.Client, _ packets.Packet) { g.unlock(cl) }

// OnDisconnect is a safety net: nothing should be held here.
func (g *guard) OnDisconnect(cl *mochi.Client, _ error, _ bool) { g.unlock(cl) }
