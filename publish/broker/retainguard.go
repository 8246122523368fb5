package broker

import (
	"bytes"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// retainGuard works around a data race in mochi v2.7.9: storing a retained
// message writes the topic node's retained path under the index lock, but a
// SUBSCRIBE scanning for retained messages reads it without any lock. A
// torn read there can crash the broker, and with it the gateway that embeds
// it. The guard makes retained stores exclusive and retained scans shared:
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
type retainGuard struct {
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

func newRetainGuard(topicAliasMax uint16) *retainGuard {
	return &retainGuard{topicAliasMax: topicAliasMax, held: map[*mochi.Client]lockMode{}}
}

func (g *retainGuard) ID() string { return "unsgate-retain-guard" }

func (g *retainGuard) Provides(b byte) bool {
	return bytes.Contains([]byte{mochi.OnPacketRead, mochi.OnPacketProcessed, mochi.OnWill, mochi.OnWillSent, mochi.OnDisconnect}, []byte{b})
}

func (g *retainGuard) lock(cl *mochi.Client, m lockMode) {
	if m == writeLocked {
		g.rw.Lock()
	} else {
		g.rw.RLock()
	}
	g.mu.Lock()
	g.held[cl] = m
	g.mu.Unlock()
}

func (g *retainGuard) unlock(cl *mochi.Client) {
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

func (g *retainGuard) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
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

func (g *retainGuard) OnPacketProcessed(cl *mochi.Client, _ packets.Packet, _ error) { g.unlock(cl) }

func (g *retainGuard) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	if will.Retain && will.WillDelayInterval == 0 {
		g.lock(cl, writeLocked)
	}
	return will, nil
}

func (g *retainGuard) OnWillSent(cl *mochi.Client, _ packets.Packet) { g.unlock(cl) }

// OnDisconnect is a safety net: nothing should be held here.
func (g *retainGuard) OnDisconnect(cl *mochi.Client, _ error, _ bool) { g.unlock(cl) }
