package modbus

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

func holding(r int, t model.RawType) model.ModbusAddress {
	return model.ModbusAddress{Area: model.AreaHoldingRegister, Register: uint16(r), Type: t, Bit: -1}
}

func coil(r int) model.ModbusAddress {
	return model.ModbusAddress{Area: model.AreaCoil, Register: uint16(r), Type: model.RawBool, Bit: -1}
}

func tagsOf(addrs ...model.ModbusAddress) []Tag {
	tags := make([]Tag, len(addrs))
	for i, a := range addrs {
		tags[i] = Tag{Key: fmt.Sprintf("t%d", i), Addr: a}
	}
	return tags
}

func mustPlan(t *testing.T, cfg Config) []Request {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "plc1"
	}
	if cfg.URL == "" {
		cfg.URL = "tcp://127.0.0.1:502"
	}
	reqs, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, cfg, reqs)
	return reqs
}

// checkPlan verifies the invariants of any plan: every tag read exactly
// once, whole, at its offset; sizes and gaps within limits; groups not
// mixed.
func checkPlan(t *testing.T, cfg Config, reqs []Request) {
	t.Helper()
	maxGap, maxBitGap := cmp.Or(cfg.MaxGap, DefaultMaxGap), cmp.Or(cfg.MaxBitGap, DefaultMaxBitGap)
	maxGap, maxBitGap = max(maxGap, 0), max(maxBitGap, 0)
	seen := map[string]int{}
	for i := range reqs {
		r := &reqs[i]
		limit, gapLimit := MaxRegisters, maxGap
		if r.Area.IsBit() {
			limit, gapLimit = MaxBits, maxBitGap
		}
		if r.Count < 1 || r.Count > limit || int(r.Start)+r.Count > 65536 {
			t.Fatalf("request %v: bad size", r)
		}
		used := make([]bool, r.Count)
		for _, b := range r.Bindings {
			seen[b.Key]++
			size := 1
			if !r.Area.IsBit() {
				size = b.Addr.Type.Registers(b.Addr.Length)
			}
			if int(b.Addr.Register) != int(r.Start)+b.Offset || b.Offset+size > r.Count {
				t.Fatalf("request %v: binding %s at offset %d does not fit", r, b.Key, b.Offset)
			}
			if b.Addr.Area != r.Area || b.Addr.UnitID != int(r.UnitID) {
				t.Fatalf("request %v: binding %s of another group", r, b.Key)
			}
			for j := b.Offset; j < b.Offset+size; j++ {
				used[j] = true
			}
		}
		if !used[0] || !used[r.Count-1] {
			t.Fatalf("request %v reads unused registers at an end", r)
		}
		run := 0
		for _, u := range used {
			if u {
				run = 0
			} else if run++; run > gapLimit {
				t.Fatalf("request %v bridges a gap longer than %d", r, gapLimit)
			}
		}
	}
	for _, tg := range cfg.Tags {
		key := cmp.Or(tg.Key, tg.Addr.Key())
		if seen[key] != 1 {
			t.Fatalf("tag %s read %d times", key, seen[key])
		}
	}
}

// greedyCount is the reference: walk values sorted by start and extend the
// current request while the next value's end fits and the gap is small
// enough.
func greedyCount(vals [][2]int, limit, maxGap int) int {
	slices.SortFunc(vals, func(a, b [2]int) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	n, start, end := 0, 0, 0
	for i, v := range vals {
		if i > 0 && v[0]-end <= maxGap && max(end, v[1])-start <= limit {
			end = max(end, v[1])
			continue
		}
		n++
		start, end = v[0], v[1]
	}
	return n
}

func TestPlanCounts(t *testing.T) {
	seq := func(n, step int, typ model.RawType) []Tag {
		var addrs []model.ModbusAddress
		for i := range n {
			addrs = append(addrs, holding(i*step, typ))
		}
		return tagsOf(addrs...)
	}
	coils := func(n, step int) []Tag {
		var addrs []model.ModbusAddress
		for i := range n {
			addrs = append(addrs, coil(i*step))
		}
		return tagsOf(addrs...)
	}
	cases := []struct {
		name   string
		cfg    Config
		want   int
		counts []int // register/bit count of each request, when checked
	}{
		// 1000 registers: ceil(1000/125) = 8, the protocol minimum.
		{"1000 uint16 dense", Config{Tags: seq(1000, 1, model.RawUint16)}, 8, []int{125, 125, 125, 125, 125, 125, 125, 125}},
		// 62 float32 fill 124 registers; the 63rd would straddle 125. 300 = 4·62 + 52.
		{"300 float32 dense", Config{Tags: seq(300, 2, model.RawFloat32)}, 5, []int{124, 124, 124, 124, 104}},
		// 31 float64 per request (124 registers); 100 = 3·31 + 7.
		{"100 float64 dense", Config{Tags: seq(100, 4, model.RawFloat64)}, 4, []int{124, 124, 124, 28}},
		// 125 uint16 exactly fill one request.
		{"125 uint16", Config{Tags: seq(125, 1, model.RawUint16)}, 1, []int{125}},
		{"126 uint16", Config{Tags: seq(126, 1, model.RawUint16)}, 2, []int{125, 1}},
		// Every 20th register: gap 19 > 16, one request each.
		{"sparse gap 19", Config{Tags: seq(10, 20, model.RawUint16)}, 10, nil},
		// The same with MaxGap 19: 7 values span 121 registers, the 8th would end at 141 > 125.
		{"sparse bridged", Config{Tags: seq(10, 20, model.RawUint16), MaxGap: 19}, 2, []int{121, 41}},
		// Negative MaxGap never bridges: every 2nd register is one request each.
		{"no bridging", Config{Tags: seq(5, 2, model.RawUint16), MaxGap: -1}, 5, nil},
		// 5000 coils: 2000 + 2000 + 1000.
		{"5000 coils dense", Config{Tags: coils(5000, 1)}, 3, []int{2000, 2000, 1000}},
		// Coils every 200 (gap 199 <= 256): 10 per request (span 1801), 50 coils -> 5.
		{"coils every 200", Config{Tags: coils(50, 200)}, 5, []int{1801, 1801, 1801, 1801, 1801}},
		// Coils every 300: gap 299 > 256.
		{"coils every 300", Config{Tags: coils(4, 300)}, 4, nil},
		{"coils every 300 bridged", Config{Tags: coils(4, 300), MaxBitGap: 300}, 1, []int{901}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reqs := mustPlan(t, c.cfg)
			if len(reqs) != c.want {
				t.Fatalf("%d requests, want %d: %v", len(reqs), c.want, reqs)
			}
			if c.counts != nil {
				var got []int
				for _, r := range reqs {
					got = append(got, r.Count)
				}
				if !slices.Equal(got, c.counts) {
					t.Fatalf("counts %v, want %v", got, c.counts)
				}
			}
		})
	}
}

func TestPlanGroupsAndOverlaps(t *testing.T) {
	bit := func(r, b int) model.ModbusAddress {
		a := holding(r, model.RawBool)
		a.Bit = b
		return a
	}
	u2 := holding(0, model.RawUint16)
	u2.UnitID = 2
	inp := holding(1, model.RawUint16)
	inp.Area = model.AreaInputRegister
	tags := tagsOf(
		holding(0, model.RawUint16), u2, inp, // three groups: unit 1, unit 2, input area
		holding(100, model.RawFloat32), holding(101, model.RawUint16), // overlapping values
		bit(110, 0), bit(110, 15), holding(110, model.RawUint16), // one register, three values
	)
	slow := Tag{Key: "slow", Addr: holding(1, model.RawUint16), Poll: 5 * time.Second}
	tags = append(tags, slow)
	reqs := mustPlan(t, Config{Tags: tags, UnitID: 0})
	var got []string
	for _, r := range reqs {
		var keys []string
		for _, b := range r.Bindings {
			keys = append(keys, fmt.Sprintf("%s@%d", b.Key, b.Offset))
		}
		got = append(got, fmt.Sprintf("%v every %v: %s", &r, r.Poll, strings.Join(keys, " ")))
	}
	want := []string{
		"input 1+1 (unit 1) every 1s: t2@0",
		"holding 0+1 (unit 1) every 1s: t0@0", // 99 unused registers to the next value: too far
		"holding 100+11 (unit 1) every 1s: t3@0 t4@1 t5@10 t6@10 t7@10",
		"holding 0+1 (unit 2) every 1s: t1@0",
		"holding 1+1 (unit 1) every 5s: slow@0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A gap of exactly MaxGap unused registers is bridged; one more is not.
func TestPlanGapBoundary(t *testing.T) {
	for _, c := range []struct {
		gap, maxGap, want int
	}{{16, 16, 1}, {17, 16, 2}, {0, 0, 1}, {1, -1, 2}} {
		tags := tagsOf(holding(0, model.RawUint16), holding(1+c.gap, model.RawUint16))
		if reqs := mustPlan(t, Config{Tags: tags, MaxGap: c.maxGap}); len(reqs) != c.want {
			t.Errorf("gap %d, MaxGap %d: %d requests, want %d", c.gap, c.maxGap, len(reqs), c.want)
		}
	}
}

func TestPlanDuplicateKeys(t *testing.T) {
	a := holding(10, model.RawUint32)
	tags := []Tag{
		{Key: "k", Addr: a, Poll: 2 * time.Second},
		{Key: "k", Addr: a, Poll: 500 * time.Millisecond},
		{Addr: a}, // key defaults to the address's own key
	}
	src, err := New(Config{Name: "plc1", URL: "tcp://h:502", Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.Addresses(), []string{"k", a.Key()}; !slices.Equal(got, want) {
		t.Fatalf("Addresses = %v, want %v", got, want)
	}
	var polls []string
	for _, r := range src.Requests() {
		for _, b := range r.Bindings {
			polls = append(polls, fmt.Sprintf("%s:%v", b.Key, r.Poll))
		}
	}
	// the fastest poll of a duplicated key wins
	if want := []string{"k:500ms", a.Key() + ":1s"}; !slices.Equal(polls, want) {
		t.Fatalf("polls %v, want %v", polls, want)
	}

	tags[1].Addr.Register = 11
	if _, err := New(Config{Name: "plc1", URL: "tcp://h:502", Tags: tags}); !errors.Is(err, connectors.ErrConfig) ||
		!strings.Contains(err.Error(), "tag k: bound twice") {
		t.Fatalf("conflicting duplicate: %v", err)
	}
}

// The planner never needs more requests than the reference greedy planner,
// and every plan satisfies the invariants, on random maps.
func TestPlanRandomAgainstGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	types := []model.RawType{model.RawBool, model.RawInt16, model.RawUint16, model.RawInt32, model.RawFloat32,
		model.RawUint64, model.RawFloat64, model.RawString}
	for iter := range 500 {
		n := 1 + rng.IntN(300)
		span := 1 + rng.IntN(3000)
		base := rng.IntN(65536 - span - 200)
		cfg := Config{MaxGap: rng.IntN(40) - 5, MaxBitGap: rng.IntN(600) - 50}
		for i := range n {
			var a model.ModbusAddress
			switch rng.IntN(4) {
			case 0:
				a = coil(base + rng.IntN(span))
			case 1:
				a = coil(base + rng.IntN(span))
				a.Area = model.AreaDiscreteInput
			default:
				typ := types[rng.IntN(len(types))]
				a = holding(base+rng.IntN(span), typ)
				if rng.IntN(3) == 0 {
					a.Area = model.AreaInputRegister
				}
				if typ == model.RawString {
					a.Length = 1 + rng.IntN(MaxRegisters)
				}
				if typ == model.RawBool && rng.IntN(2) == 0 {
					a.Bit = rng.IntN(16)
				}
			}
			if rng.IntN(10) == 0 {
				a.UnitID = 1 + rng.IntN(3)
			}
			tg := Tag{Key: fmt.Sprintf("k%d", i), Addr: a}
			if rng.IntN(10) == 0 {
				tg.Poll = time.Duration(1+rng.IntN(2)) * time.Second
			}
			cfg.Tags = append(cfg.Tags, tg)
		}
		reqs := mustPlan(t, cfg)

		// reference: greedy per group over all values
		type gk struct {
			unit int
			area model.Area
			poll time.Duration
		}
		groups := map[gk][][2]int{}
		for _, tg := range cfg.Tags {
			u := cmp.Or(tg.Addr.UnitID, DefaultUnitID)
			k := gk{u, tg.Addr.Area, cmp.Or(tg.Poll, DefaultPoll)}
			size := 1
			if !tg.Addr.Area.IsBit() {
				size = tg.Addr.Type.Registers(tg.Addr.Length)
			}
			groups[k] = append(groups[k], [2]int{int(tg.Addr.Register), int(tg.Addr.Register) + size})
		}
		ref := 0
		for k, vals := range groups {
			limit, gap := MaxRegisters, cmp.Or(cfg.MaxGap, DefaultMaxGap)
			if k.area.IsBit() {
				limit, gap = MaxBits, cmp.Or(cfg.MaxBitGap, DefaultMaxBitGap)
			}
			ref += greedyCount(vals, limit, max(gap, 0))
		}
		if len(reqs) > ref {
			t.Fatalf("iteration %d: %d requests, greedy needs %d", iter, len(reqs), ref)
		}
	}
}

// On dense maps the plan is at the protocol minimum: no request could take
// one more value.
func TestPlanDenseMinimum(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := map[model.RawType]int{model.RawUint16: 1, model.RawFloat32: 2, model.RawFloat64: 4}
	types := []model.RawType{model.RawUint16, model.RawFloat32, model.RawFloat64}
	for range 200 {
		var tags []Tag
		total := 0
		for i := range 1 + rng.IntN(500) {
			typ := types[rng.IntN(len(types))]
			tags = append(tags, Tag{Key: fmt.Sprint(i), Addr: holding(total, typ)})
			total += sizes[typ]
		}
		reqs := mustPlan(t, Config{Tags: tags})
		if min := (total + MaxRegisters - 1) / MaxRegisters; len(reqs) < min {
			t.Fatalf("%d requests for %d registers, below the minimum %d", len(reqs), total, min)
		}
		// Each request except the last is full up to the next value's size:
		// the greedy rule leaves room only for less than one more value.
		for i := 0; i+1 < len(reqs); i++ {
			next := reqs[i+1].Bindings[0]
			if reqs[i].Count+next.Addr.Type.Registers(0) <= MaxRegisters {
				t.Fatalf("request %v could have taken %s", &reqs[i], next.Key)
			}
		}
	}
}

func TestNewValidation(t *testing.T) {
	good := func() Config {
		return Config{Name: "plc1", URL: "tcp://10.0.0.1:502", Tags: tagsOf(holding(0, model.RawUint16))}
	}
	bad := func(mod func(c *Config), want string) {
		t.Helper()
		c := good()
		mod(&c)
		_, err := New(c)
		if !errors.Is(err, connectors.ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", want, err)
			return
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	tag := func(mod func(a *model.ModbusAddress)) func(c *Config) {
		return func(c *Config) { mod(&c.Tags[0].Addr) }
	}
	bad(func(c *Config) { c.Name = "" }, "name is empty")
	bad(func(c *Config) { c.URL = "http://h:502" }, "scheme must be tcp")
	bad(func(c *Config) { c.URL = "10.0.0.1:502" }, "scheme must be tcp")
	bad(func(c *Config) { c.URL = "tcp://10.0.0.1" }, "port is missing")
	bad(func(c *Config) { c.URL = "tcp://:502" }, "host is missing")
	bad(func(c *Config) { c.URL = "tcp://h:70000" }, "out of range")
	bad(func(c *Config) { c.URL = "tcp://h:502/x" }, "only tcp://host:port")
	bad(func(c *Config) { c.URL = "tcp://h:502?unit=1" }, "only tcp://host:port")
	bad(func(c *Config) { c.UnitID = 256 }, "unit id 256")
	bad(func(c *Config) { c.Poll = -time.Second }, "poll interval -1s is negative")
	bad(func(c *Config) { c.Timeout = -1 }, "timeout")
	bad(func(c *Config) { c.Pause = -1 }, "pause")
	bad(func(c *Config) { c.Tags[0].Poll = -1 }, "tag t0: poll interval")
	bad(tag(func(a *model.ModbusAddress) { a.Area = 0 }), "unknown area")
	bad(tag(func(a *model.ModbusAddress) { a.UnitID = 300 }), "unit id 300")
	bad(tag(func(a *model.ModbusAddress) { a.Area = model.AreaCoil }), "coil holds bits, type uint16")
	bad(tag(func(a *model.ModbusAddress) { *a = coil(1); a.Bit = 3 }), "bit number on coil")
	bad(tag(func(a *model.ModbusAddress) { a.Type = model.RawBool; a.Bit = 16 }), "bit 16")
	bad(tag(func(a *model.ModbusAddress) { a.Bit = 3 }), "register bit is a bool")
	bad(tag(func(a *model.ModbusAddress) { a.Type = 99 }), "unknown type")
	bad(tag(func(a *model.ModbusAddress) { a.Type = model.RawString }), "string length 0")
	bad(tag(func(a *model.ModbusAddress) { a.Type = model.RawString; a.Length = 126 }), "string length 126")
	bad(tag(func(a *model.ModbusAddress) { a.Type = model.RawString; a.Length = 2; a.Order = model.OrderCDAB }), "string byte order")
	bad(tag(func(a *model.ModbusAddress) { a.Length = 2 }), "length on uint16")
	bad(tag(func(a *model.ModbusAddress) { a.Type = model.RawFloat32; a.Register = 65535 }), "past 65535")
	bad(tag(func(a *model.ModbusAddress) { a.Order = 7 }), "byte order")

	// all problems at once
	c := good()
	c.URL = "udp://x"
	c.Tags = append(c.Tags, Tag{Key: "b", Addr: coil(0)})
	c.Tags[1].Addr.Type = model.RawUint16
	_, err := New(c)
	if err == nil || !strings.Contains(err.Error(), "scheme") || !strings.Contains(err.Error(), "tag b:") {
		t.Errorf("want every problem at once, got %v", err)
	}

	// the edges that are fine
	c = good()
	c.Tags = tagsOf(holding(65532, model.RawFloat64), coil(65535), holding(65535, model.RawUint16))
	c.UnitID = 255
	c.URL = "tcp://[::1]:1502"
	if _, err := New(c); err != nil {
		t.Errorf("valid edge config: %v", err)
	}
	c.Tags = nil
	if src, err := New(c); err != nil || len(src.Addresses()) != 0 {
		t.Errorf("no tags: %v", err)
	}
}

func ExamplePlan() {
	f := holding(104, model.RawFloat32)
	f.Order = model.OrderCDAB
	reqs, err := Plan(Config{Name: "plc1", URL: "tcp://192.0.2.10:502", Tags: []Tag{
		{Key: "speed", Addr: holding(100, model.RawUint16)},
		{Key: "level", Addr: f},                             // 2 unused registers (102, 103) are bridged
		{Key: "total", Addr: holding(300, model.RawUint64)}, // too far away: its own request
		{Key: "motor", Addr: coil(7), Poll: 100 * time.Millisecond},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range reqs {
		fmt.Printf("%v every %v:", r, r.Poll)
		for _, b := range r.Bindings {
			fmt.Printf(" %s@%d", b.Key, b.Offset)
		}
		fmt.Println()
	}
	// Output:
	// coil 7+1 (unit 1) every 100ms: motor@0
	// holding 100+6 (unit 1) every 1s: speed@0 level@4
	// holding 300+4 (unit 1) every 1s: total@0
}

// Planner property check over random tag sets, including addresses at the
// top of the address space and long strings.
func TestPlanLimitsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	types := []model.RawType{model.RawBool, model.RawInt16, model.RawUint32, model.RawFloat64, model.RawString}
	for iter := 0; iter < 300; iter++ {
		var tags []Tag
		n := 1 + rng.IntN(200)
		for i := 0; i < n; i++ {
			area := model.Area(1 + rng.IntN(4))
			a := model.ModbusAddress{Area: area, Bit: -1, UnitID: rng.IntN(3)}
			if area.IsBit() {
				a.Type = model.RawBool
			} else {
				a.Type = types[rng.IntN(len(types))]
				if a.Type == model.RawString {
					a.Length = 1 + rng.IntN(125)
				}
			}
			size := 1
			if !area.IsBit() {
				size = a.Type.Registers(a.Length)
			}
			var reg int
			if rng.IntN(2) == 0 {
				reg = 65536 - size - rng.IntN(300)
			} else {
				reg = rng.IntN(3000)
			}
			if reg < 0 {
				reg = 0
			}
			a.Register = uint16(reg)
			tags = append(tags, Tag{Key: "k" + strconv.Itoa(i), Addr: a,
				Poll: time.Duration(1+rng.IntN(2)) * time.Second})
		}
		cfg := Config{Name: "p", URL: "tcp://h:502", UnitID: 1 + rng.IntN(255), MaxGap: rng.IntN(40) - 5, MaxBitGap: rng.IntN(600) - 5, Tags: tags}
		reqs, err := Plan(cfg)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, r := range reqs {
			limit := MaxRegisters
			if r.Area.IsBit() {
				limit = MaxBits
			}
			if r.Count < 1 || r.Count > limit || int(r.Start)+r.Count > 65536 {
				t.Fatalf("bad request %v", r)
			}
			for _, b := range r.Bindings {
				size := 1
				if !r.Area.IsBit() {
					size = b.Addr.Type.Registers(b.Addr.Length)
				}
				if b.Offset < 0 || b.Offset+size > r.Count || int(r.Start)+b.Offset != int(b.Addr.Register) ||
					uint8(b.Addr.UnitID) != r.UnitID || b.Addr.UnitID == 0 || b.Addr.Area != r.Area {
					t.Fatalf("binding %+v in %v", b, r)
				}
				if seen[b.Key] {
					t.Fatalf("key %s twice", b.Key)
				}
				seen[b.Key] = true
			}
		}
		if len(seen) != len(tags) {
			t.Fatalf("%d of %d keys planned", len(seen), len(tags))
		}
	}
}
