package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// notifyBuffer is how many notification messages may wait for the
// session's goroutine; the client's publish loop blocks beyond it, which
// slows the server down instead of losing data.
const notifyBuffer = 64

// Client handles: binding i's items carry handle i+1, so a notification
// finds its binding without a map, and the liveness item carries the
// handle after the last binding's. None is 0 or 0xFFFFFFFF: some servers
// treat those as "no handle" (node-opcua keeps its default of 0 for both,
// which would report the liveness samples as binding 0's values).
func itemHandle(i int) uint32 { return uint32(i) + 1 }

// bindingOf is the binding index of a client handle, or -1.
func (ss *session) bindingOf(h uint32) int {
	if h == 0 || uint64(h) > uint64(len(ss.nodes)) {
		return -1
	}
	return int(h) - 1
}

// livenessHandle is the client handle of the liveness item: a monitored
// item on Server_ServerStatus_CurrentTime (i=2258) in the source's
// subscription.
//
// Why: a subscription can die while the connection stays up (the server
// lost or deleted it, or stopped publishing it), and gopcua v0.9.0 does not
// say so: it passes no keep-alive on and quietly pauses its publish loop on
// BadNoSubscription, so tags would stay GOOD with frozen values. A
// compliant server's CurrentTime changes at every sample, so with a
// sampling interval of the publishing interval every publishing cycle
// carries a sample of it: when none arrives within KeepAlive (counted from
// the subscription's creation, then from each sample) the session ends
// and the supervisor starts over. Counting from the creation also catches
// a subscription that never publishes: gopcua's publish loop can stay
// paused from the start (its pause at NewClient and resume at Subscribe
// are buffered signals taken in random order). The samples are not
// emitted. A server that refuses the item leaves only the server-state
// watchdog.
func (ss *session) livenessHandle() uint32 { return itemHandle(len(ss.src.binds)) }

// subscribe creates the subscription and its monitored items, the
// liveness item last. Items the server refuses are emitted BAD with their
// status code and logged.
func (ss *session) subscribe(ctx context.Context) (*opcua.Subscription, error) {
	interval := ss.cfg.PublishingInterval
	// Bounded so that the lifetime (3 keep-alives) fits in a uint32.
	keepAlive := uint32(min(max(1, math.Round(float64(ss.cfg.KeepAlive)/float64(interval))), math.MaxUint32/3))
	// The server drops a subscription nobody publishes on after lifetime
	// intervals. A lost connection leaves the old subscription behind (the
	// next session creates its own rather than transferring it), so use
	// the shortest lifetime allowed, three keep-alives (Part 4, 5.13.2):
	// an orphan lives about 3 × KeepAlive.
	lifetime := 3 * keepAlive
	ss.notifs = make(chan *opcua.PublishNotificationData, notifyBuffer)
	rctx, cancel := ss.request(ctx)
	sub, err := ss.c.Subscribe(rctx, &opcua.SubscriptionParameters{
		Interval:          interval,
		MaxKeepAliveCount: keepAlive,
		LifetimeCount:     lifetime,
	}, ss.notifs)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("create subscription: %w", err)
	}
	ss.revisedInterval = sub.RevisedPublishingInterval
	ss.log.Debug("subscription created", "id", sub.SubscriptionID, "publishing_interval", sub.RevisedPublishingInterval,
		"keep_alive_count", sub.RevisedMaxKeepAliveCount, "lifetime_count", sub.RevisedLifetimeCount)

	// handles[k] is the binding index of request k (see itemHandle).
	var handles []int
	var reqs []*ua.MonitoredItemCreateRequest
	for i, node := range ss.nodes {
		if node == nil {
			continue
		}
		handles = append(handles, i)
		reqs = append(reqs, ss.itemRequest(i, node))
	}
	ss.reported = make([]bool, len(ss.nodes))
	// Nothing to watch without items: the watchdog still watches the
	// connection.
	liveIdx := -1
	if len(reqs) > 0 {
		liveIdx = len(reqs)
		handles = append(handles, -1)
		reqs = append(reqs, ss.livenessRequest())
	}
	var badIdx []int
	var badStatus []ua.StatusCode
	good := 0
	for start := 0; start < len(reqs); start += ss.limits.maxItemsPerCall {
		end := min(start+ss.limits.maxItemsPerCall, len(reqs))
		rctx, cancel := ss.request(ctx)
		res, err := sub.Monitor(rctx, ua.TimestampsToReturnBoth, reqs[start:end]...)
		cancel()
		if start != liveIdx {
			ss.src.createCalls.Add(1)
		}
		if err != nil {
			return sub, fmt.Errorf("create monitored items %d..%d of %d: %w", start+1, end, len(reqs), err)
		}
		if len(res.Results) != end-start {
			return sub, fmt.Errorf("create monitored items: %d results for %d items", len(res.Results), end-start)
		}
		for k, r := range res.Results {
			status := ua.StatusBadUnexpectedError
			if r != nil {
				status = r.StatusCode
			}
			if start+k == liveIdx {
				var revised float64
				if r != nil {
					revised = r.RevisedSamplingInterval
				}
				ss.livenessCreated(status, revised)
				continue
			}
			i := handles[start+k]
			key := ss.src.binds[i].key
			if quality(status) == model.QualityBad {
				ss.nodes[i] = nil
				badIdx, badStatus = append(badIdx, i), append(badStatus, status)
				ss.logProblem(key, "the server refused to monitor the node", "node", reqs[start+k].ItemToMonitor.NodeID.String(), "status", status.Error())
				continue
			}
			good++
			ss.forget(key)
		}
	}
	ss.src.items.Store(int64(good))
	ss.src.unresolved.Add(int64(len(badIdx)))
	ss.emitBad(badIdx, badStatus)
	ss.pending = good
	return sub, nil
}

// itemRequest is binding i's monitored item on node.
func (ss *session) itemRequest(i int, node *ua.NodeID) *ua.MonitoredItemCreateRequest {
	b := &ss.src.binds[i]
	filter := ua.NewExtensionObject(nil)
	if b.deadband > 0 {
		filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger:       ua.DataChangeTriggerStatusValue,
			DeadbandType:  uint32(ua.DeadbandTypeAbsolute),
			DeadbandValue: b.deadband,
		})
	}
	return monitorRequest(node, itemHandle(i), b.sampling, b.queue, filter)
}

// livenessRequest is the liveness item (see session.livenessHandle):
// sampled at the publishing interval, queue 1, as only the latest sample
// matters.
func (ss *session) livenessRequest() *ua.MonitoredItemCreateRequest {
	return monitorRequest(nodeCurrentTime, ss.livenessHandle(), ss.revisedInterval, 1, ua.NewExtensionObject(nil))
}

// monitorRequest is a reporting monitored item on node's value that
// discards the oldest value when its queue is full.
func monitorRequest(node *ua.NodeID, handle uint32, sampling time.Duration, queue uint32, filter *ua.ExtensionObject) *ua.MonitoredItemCreateRequest {
	return &ua.MonitoredItemCreateRequest{
		ItemToMonitor: &ua.ReadValueID{
			NodeID:      node,
			AttributeID: ua.AttributeIDValue,
			// gopcua encodes a nil QualifiedName as garbage.
			DataEncoding: &ua.QualifiedName{},
		},
		MonitoringMode: ua.MonitoringModeReporting,
		RequestedParameters: &ua.MonitoringParameters{
			ClientHandle:     handle,
			SamplingInterval: float64(sampling) / float64(time.Millisecond),
			QueueSize:        queue,
			DiscardOldest:    true,
			Filter:           filter,
		},
	}
}

// livenessCreated takes the server's answer to the liveness item. A
// refusal is no reason to fail the session: the watchdog still notices a
// lost connection or a silent server, only not a lost subscription.
// revisedMs is the sampling interval the server chose for it, in
// milliseconds.
func (ss *session) livenessCreated(status ua.StatusCode, revisedMs float64) {
	ss.liveness = quality(status) != model.QualityBad
	ss.livenessSampling = 0
	if revisedMs > 0 && revisedMs < float64(time.Hour/time.Millisecond) {
		ss.livenessSampling = time.Duration(revisedMs * float64(time.Millisecond))
	}
	if ss.liveness {
		return
	}
	msg, args := "the server refused a monitored item on CurrentTime (i=2258); a subscription the server loses while the connection stays up will not be noticed",
		[]any{"status", status.Error()}
	if ss.src.livenessRefused.CompareAndSwap(false, true) {
		ss.log.Warn(msg, args...)
		return
	}
	ss.log.Debug(msg, args...)
}

// livenessDeadline is how long the subscription may go without a liveness
// sample: KeepAlive, or two publishing intervals or two samplings of the
// item if the server publishes or samples so slowly that KeepAlive would
// not see one (servers often sample CurrentTime once a second at most).
func (ss *session) livenessDeadline() time.Duration {
	return max(ss.cfg.KeepAlive, 2*ss.revisedInterval, 2*ss.livenessSampling)
}

// firstValueWait is how long monitored items may take to report their
// first value before they are read instead: a server samples a new item at
// once and reports it with the next publish.
func (ss *session) firstValueWait() time.Duration {
	return min(max(3*ss.revisedInterval, 500*time.Millisecond), ss.cfg.KeepAlive)
}

// listen turns notifications into samples until the session ends.
func (ss *session) listen(ctx context.Context, sub *opcua.Subscription) error {
	first := time.NewTimer(ss.firstValueWait())
	defer first.Stop()
	if ss.pending == 0 {
		first.Stop()
	}
	// Reset by each liveness sample.
	deadline := ss.livenessDeadline()
	silent := time.NewTimer(deadline)
	defer silent.Stop()
	if !ss.liveness {
		silent.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ss.lost:
			return ss.errLost()
		case err := <-ss.failed:
			return err
		case <-first.C:
			if err := ss.readFirstValues(ctx); err != nil {
				return err
			}
		case <-silent.C:
			return fmt.Errorf("opcua %s: keep-alive: subscription %d silent for %v: no sample of CurrentTime (i=2258) in that time (did the server lose the subscription, stop publishing or stop answering?)",
				ss.cfg.Name, sub.SubscriptionID, deadline)
		case n := <-ss.notifs:
			if n.Error != nil {
				return fmt.Errorf("opcua %s: subscription %d: %w", ss.cfg.Name, sub.SubscriptionID, n.Error)
			}
			switch v := n.Value.(type) {
			case *ua.DataChangeNotification:
				ss.dataChange(v, time.Now())
				if ss.alive {
					ss.alive = false
					if ss.liveness {
						silent.Reset(deadline)
					}
				}
			case *ua.StatusChangeNotification:
				if quality(v.Status) == model.QualityBad {
					return fmt.Errorf("opcua %s: subscription %d: status change: %w", ss.cfg.Name, sub.SubscriptionID, v.Status)
				}
				ss.log.Info("subscription status change", "status", v.Status.Error())
			}
		}
	}
}

// dataChange emits one notification message as one batch, reusing the
// batch slice. No allocation for scalar values.
func (ss *session) dataChange(n *ua.DataChangeNotification, recv time.Time) {
	b := ss.batch[:0]
	live, liveH := 0, ss.livenessHandle()
	for _, it := range n.MonitoredItems {
		if it == nil {
			continue
		}
		if it.ClientHandle == liveH {
			// Not a binding: only its arrival matters.
			ss.alive = true
			live++
			continue
		}
		i := ss.bindingOf(it.ClientHandle)
		if i < 0 || ss.nodes[i] == nil {
			ss.src.unknown.Add(1)
			continue
		}
		if !ss.reported[i] {
			ss.reported[i] = true
			ss.pending--
		}
		b = append(b, model.Sample{Source: ss.cfg.Name, Address: ss.src.binds[i].key, ReceiveTime: recv})
		s := &b[len(b)-1]
		if err := ss.conv.fillSample(s, it.Value, ss.last[i]); err != nil {
			ss.unsupported(i, err)
		}
		ss.last[i] = s.Value
	}
	ss.batch = b
	if len(n.MonitoredItems) > live {
		ss.src.notifications.Add(1)
	}
	if len(b) > 0 {
		ss.src.samples.Add(uint64(len(b)))
		ss.emit(b)
	}
}

// unsupported logs a value the gateway cannot carry, once per key and
// problem.
func (ss *session) unsupported(i int, err error) {
	if errors.Is(err, errUnsupportedType) {
		ss.logProblem(ss.src.binds[i].key, "value type not supported; the tag is BAD", "err", err.Error())
	}
}

// readFirstValues reads the items that have not reported a first value:
// the specification has the server send it, but a tag must never wait for
// its first change to get a value.
func (ss *session) readFirstValues(ctx context.Context) error {
	var idx []int
	for i, node := range ss.nodes {
		if node != nil && !ss.reported[i] {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	ss.log.Info("monitored items sent no first value; reading them", "items", len(idx), "waited", ss.firstValueWait())
	for start := 0; start < len(idx); start += ss.limits.maxNodesPerRead {
		part := idx[start:min(start+ss.limits.maxNodesPerRead, len(idx))]
		if err := ss.readBatch(ctx, part, readRequest(ss.nodes, part)); err != nil {
			return err
		}
		for _, i := range part {
			// A notification may have arrived meanwhile; either way the tag
			// has its value now.
			if !ss.reported[i] {
				ss.reported[i] = true
				ss.pending--
			}
		}
	}
	return nil
}
