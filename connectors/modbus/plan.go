package modbus

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Request is one read request of the poll plan: Count registers or bits of
// Area starting at Start, on unit UnitID, every Poll.
type Request struct {
	UnitID uint8
	Area   model.Area
	Start  uint16
	Count  int // 1..MaxRegisters registers, or 1..MaxBits bits
	Poll   time.Duration
	// Bindings are the values decoded from the response, by Offset then Key.
	Bindings []Binding
}

// Binding is one value inside a request's response block.
type Binding struct {
	Key string
	// Addr is the tag's address with UnitID resolved to the unit id used.
	Addr model.ModbusAddress
	// Offset is the index of the value's first register (or bit) in the
	// block the request returns.
	Offset int
}

// String names the request the way errors and logs do: "holding 100+10 (unit 1)".
func (r Request) String() string {
	return fmt.Sprintf("%s %d+%d (unit %d)", r.Area, r.Start, r.Count, r.UnitID)
}

// Plan validates cfg and returns its poll plan, ordered by poll interval,
// unit id, area and start address. New uses the same plan.
//
// Within one (unit id, area, poll interval) group the planner walks values
// sorted by start address (longest first on a tie, so a value lying inside
// another is read with it) and extends the current request while the next
// value ends within the size limit (MaxRegisters or MaxBits) and the unused
// run before it is at most MaxGap (MaxBitGap for bits); a value never spans
// two requests. Values inside the current request's span cost nothing.
// Once contained values are set aside, the rest have strictly increasing
// starts and ends, so every part of a feasible run of values is feasible
// too, and for such constraints greedy is optimal: no plan that reads runs
// of consecutive values needs fewer requests.
func Plan(cfg Config) ([]Request, error) {
	var probs configProblems
	s := normalize(&cfg, &probs)
	reqs := buildPlan(&s, cfg.Tags, &probs)
	if err := probs.err(cfg.Name); err != nil {
		return nil, err
	}
	return reqs, nil
}

type groupKey struct {
	poll time.Duration
	unit uint8
	area model.Area
}

type planned struct {
	b          Binding
	poll       time.Duration
	start, end int // [start, end) in registers or bits
}

func buildPlan(s *settings, tags []Tag, probs *configProblems) []Request {
	byKey := make(map[string]int, len(tags))
	var vals []planned
	for i := range tags {
		t := &tags[i]
		key := t.Key
		if key == "" {
			key = t.Addr.Key()
		}
		if msg := checkAddress(&t.Addr); msg != "" {
			probs.add("tag %s: %s", key, msg)
			continue
		}
		poll := t.Poll
		switch {
		case poll == 0:
			poll = s.poll
		case poll < 0:
			probs.add("tag %s: poll interval %v is negative", key, poll)
			continue
		}
		a := t.Addr
		if a.UnitID == 0 {
			a.UnitID = s.unitID
		}
		if j, dup := byKey[key]; dup {
			if vals[j].b.Addr != a {
				probs.add("tag %s: bound twice to different addresses", key)
			}
			vals[j].poll = min(vals[j].poll, poll)
			continue
		}
		size := 1
		if !a.Area.IsBit() {
			size = a.Type.Registers(a.Length)
		}
		byKey[key] = len(vals)
		vals = append(vals, planned{
			b:     Binding{Key: key, Addr: a},
			poll:  poll,
			start: int(a.Register),
			end:   int(a.Register) + size,
		})
	}
	if len(*probs) > 0 {
		return nil
	}

	groups := make(map[groupKey][]planned)
	for _, v := range vals {
		k := groupKey{poll: v.poll, unit: uint8(v.b.Addr.UnitID), area: v.b.Addr.Area}
		groups[k] = append(groups[k], v)
	}
	keys := make([]groupKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b groupKey) int {
		return cmp.Or(cmp.Compare(a.poll, b.poll), cmp.Compare(a.unit, b.unit), cmp.Compare(a.area, b.area))
	})

	var reqs []Request
	for _, k := range keys {
		limit, maxGap := MaxRegisters, s.maxGap
		if k.area.IsBit() {
			limit, maxGap = MaxBits, s.maxBitGap
		}
		reqs = mergeGroup(reqs, k, groups[k], limit, maxGap)
	}
	return reqs
}

// mergeGroup appends the requests for one group's values to reqs.
func mergeGroup(reqs []Request, k groupKey, vals []planned, limit, maxGap int) []Request {
	// Longest first on equal starts, so that any value lying inside another
	// comes after it and is absorbed by the request already covering it.
	slices.SortFunc(vals, func(a, b planned) int {
		return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(b.end, a.end), cmp.Compare(a.b.Key, b.b.Key))
	})
	first := len(reqs)
	var curStart, curEnd int
	for _, v := range vals {
		open := len(reqs) > first
		switch {
		case open && v.end <= curEnd:
			// inside the span already read
		case open && v.start-curEnd <= maxGap && v.end-curStart <= limit:
			curEnd = v.end
		default:
			if open {
				reqs[len(reqs)-1].Count = curEnd - curStart
			}
			curStart, curEnd = v.start, v.end
			reqs = append(reqs, Request{UnitID: k.unit, Area: k.area, Start: uint16(v.start), Poll: k.poll})
		}
		r := &reqs[len(reqs)-1]
		b := v.b
		b.Offset = v.start - curStart
		r.Bindings = append(r.Bindings, b)
	}
	if len(reqs) > first {
		reqs[len(reqs)-1].Count = curEnd - curStart
	}
	for i := first; i < len(reqs); i++ {
		slices.SortFunc(reqs[i].Bindings, func(a, b Binding) int {
			return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Key, b.Key))
		})
	}
	return reqs
}
