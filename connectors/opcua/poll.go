package opcua

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/unsgate/unsgate/model"
)

// pollGroup is the bindings sharing a poll interval, split into Read
// requests of at most MaxNodesPerRead nodes.
type pollGroup struct {
	every   time.Duration
	due     time.Time
	batches []readBatch
}

type readBatch struct {
	idx []int // binding indexes, in request order
	req *ua.ReadRequest
}

func readRequest(nodes []*ua.NodeID, idx []int) *ua.ReadRequest {
	req := &ua.ReadRequest{
		// MaxAge 0: a poll wants the device's value, not a cached one.
		TimestampsToReturn: ua.TimestampsToReturnBoth,
		NodesToRead:        make([]*ua.ReadValueID, len(idx)),
	}
	for k, i := range idx {
		req.NodesToRead[k] = &ua.ReadValueID{NodeID: nodes[i], AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}}
	}
	return req
}

// planPoll groups the resolved bindings by poll interval (shortest first)
// and splits each group into batches.
func (ss *session) planPoll() []*pollGroup {
	byEvery := map[time.Duration]*pollGroup{}
	var groups []*pollGroup
	var members = map[*pollGroup][]int{}
	for i, node := range ss.nodes {
		if node == nil {
			continue
		}
		every := ss.src.binds[i].poll
		g := byEvery[every]
		if g == nil {
			g = &pollGroup{every: every}
			byEvery[every] = g
			groups = append(groups, g)
		}
		members[g] = append(members[g], i)
	}
	slices.SortFunc(groups, func(a, b *pollGroup) int { return int(a.every - b.every) })
	for _, g := range groups {
		idx := members[g]
		for start := 0; start < len(idx); start += ss.limits.maxNodesPerRead {
			part := idx[start:min(start+ss.limits.maxNodesPerRead, len(idx))]
			g.batches = append(g.batches, readBatch{idx: part, req: readRequest(ss.nodes, part)})
		}
	}
	return groups
}

// poll reads every group at its interval on a fixed grid (missed ticks are
// skipped, never queued), one request at a time, until the session ends.
func (ss *session) poll(ctx context.Context) error {
	groups := ss.planPoll()
	n := 0
	for i := range ss.nodes {
		if ss.nodes[i] != nil {
			n++
			ss.forget(ss.src.binds[i].key)
		}
	}
	ss.src.items.Store(int64(n))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	for _, g := range groups {
		g.due = start
	}
	for {
		var next *pollGroup
		for _, g := range groups {
			if next == nil || g.due.Before(next.due) {
				next = g
			}
		}
		var wake <-chan time.Time // nil: nothing to poll, wait for the end
		if next != nil {
			if d := time.Until(next.due); d > 0 {
				timer.Reset(d)
				wake = timer.C
			} else {
				for _, b := range next.batches {
					if err := ss.readBatch(ctx, b.idx, b.req); err != nil || ctx.Err() != nil {
						return err
					}
				}
				next.due = nextTick(next.due, next.every, time.Now())
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ss.lost:
			return ss.errLost()
		case err := <-ss.failed:
			return err
		case <-wake:
		}
	}
}

// nextTick returns the first tick of the grid due + k·every after now.
func nextTick(due time.Time, every time.Duration, now time.Time) time.Time {
	next := due.Add(every)
	if !next.After(now) {
		next = due.Add((now.Sub(due)/every + 1) * every)
	}
	return next
}

// readBatch reads the nodes of bindings idx with req and emits the values
// as one batch. A failed request ends the session: gopcua treats a service
// fault as a broken connection.
func (ss *session) readBatch(ctx context.Context, idx []int, req *ua.ReadRequest) error {
	select {
	case <-ss.lost:
		return ss.errLost()
	case err := <-ss.failed:
		return err
	default:
	}
	rctx, cancel := ss.request(ctx)
	sent := time.Now()
	res, err := ss.c.Read(rctx, req)
	cancel()
	ss.src.reads.Add(1)
	if ctx.Err() != nil {
		return nil
	}
	ss.src.meterRead(time.Since(sent), err)
	if err != nil {
		return fmt.Errorf("opcua %s: read %d nodes: %w", ss.cfg.Name, len(idx), err)
	}
	if len(res.Results) != len(idx) {
		return fmt.Errorf("opcua %s: read %d nodes: %d results", ss.cfg.Name, len(idx), len(res.Results))
	}
	recv := time.Now()
	b := ss.batch[:0]
	for k, i := range idx {
		b = append(b, model.Sample{Source: ss.cfg.Name, Address: ss.src.binds[i].key, ReceiveTime: recv})
		s := &b[len(b)-1]
		if err := ss.conv.fillSample(s, res.Results[k], ss.last[i]); err != nil {
			ss.unsupported(i, err)
		}
		ss.last[i] = s.Value
	}
	ss.batch = b
	ss.src.samples.Add(uint64(len(b)))
	ss.emit(b)
	return nil
}
