package modbus

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/unsgate/unsgate/connectors"
	"github.com/unsgate/unsgate/model"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultUnitID     = 1
	DefaultPoll       = time.Second
	DefaultTimeout    = time.Second
	DefaultMaxGap     = 16
	DefaultMaxBitGap  = 256
	DefaultStaleAfter = 3
)

// Protocol limits per read request (Modbus application protocol v1.1b3,
// function codes 1-4).
const (
	MaxRegisters = 125
	MaxBits      = 2000
)

// Config describes one Modbus TCP source.
type Config struct {
	// Name is the gateway's source id; it prefixes errors and is copied
	// into every Sample.
	Name string
	// URL is tcp://host:port.
	URL string
	// UnitID is the unit id for tags whose ModbusAddress.UnitID is 0.
	// 0 selects DefaultUnitID (1); valid values are 1..255 (255 and 1 are
	// what most TCP-native devices answer to; a gateway needs the serial
	// device's address).
	UnitID int
	// Poll is the poll interval for tags without their own; 0 = 1s.
	Poll time.Duration
	// Timeout bounds every request and how long Run waits to connect (the
	// library's dial itself may go on for up to 5 s, see Source.Run);
	// 0 = 1s.
	Timeout time.Duration
	// Pause is the minimum idle time between the end of one request and the
	// start of the next, for devices that choke on back-to-back requests.
	Pause time.Duration
	// MaxGap is the largest run of unused registers read to merge two
	// values into one request; 0 = 16, negative = never bridge a gap.
	// Lower it when a device answers reads of unmapped registers with
	// "illegal data address".
	MaxGap int
	// MaxBitGap is MaxGap for coils and discrete inputs; 0 = 256,
	// negative = never bridge a gap.
	MaxBitGap int
	// StaleAfter is how many consecutive scheduled reads a request may miss
	// before its tags are reported stale (see Source.Run); 0 = 3, negative
	// disables stale marking.
	StaleAfter int
	Tags       []Tag
	// Logger receives the source's logs; nil discards them.
	Logger *slog.Logger
}

// Tag binds a key (the engine's binding key, echoed in Sample.Address) to a
// Modbus address. Tags with the same key are one binding: their addresses
// must be equal, and the shortest poll interval wins.
type Tag struct {
	Key  string // "" = Addr.Key()
	Addr model.ModbusAddress
	Poll time.Duration // 0 = Config.Poll
}

// settings is a validated Config with every default applied.
type settings struct {
	name       string
	url        string
	hostPort   string
	unitID     int
	poll       time.Duration
	timeout    time.Duration
	pause      time.Duration
	maxGap     int
	maxBitGap  int
	staleAfter int
	logger     *slog.Logger
}

// configProblems collects every problem in a config so a user fixes it in
// one pass.
type configProblems []string

func (p *configProblems) add(format string, args ...any) {
	*p = append(*p, fmt.Sprintf(format, args...))
}

func (p configProblems) err(name string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("modbus %s: %w: %s", name, connectors.ErrConfig, strings.Join(p, "; "))
}

// normalize validates cfg and applies defaults.
func normalize(cfg *Config, probs *configProblems) settings {
	s := settings{
		name:       cfg.Name,
		url:        cfg.URL,
		unitID:     cfg.UnitID,
		poll:       cfg.Poll,
		timeout:    cfg.Timeout,
		pause:      cfg.Pause,
		maxGap:     cfg.MaxGap,
		maxBitGap:  cfg.MaxBitGap,
		staleAfter: cfg.StaleAfter,
		logger:     cfg.Logger,
	}
	if s.name == "" {
		probs.add("name is empty")
	}
	s.hostPort = checkURL(cfg.URL, probs)
	switch {
	case s.unitID == 0:
		s.unitID = DefaultUnitID
	case s.unitID < 0 || s.unitID > 255:
		probs.add("unit id %d out of range 1..255", s.unitID)
	}
	checkDuration := func(what string, d *time.Duration, def time.Duration) {
		switch {
		case *d == 0:
			*d = def
		case *d < 0:
			probs.add("%s %v is negative", what, *d)
		}
	}
	checkDuration("poll interval", &s.poll, DefaultPoll)
	checkDuration("timeout", &s.timeout, DefaultTimeout)
	if s.pause < 0 {
		probs.add("pause %v is negative", s.pause)
	}
	gap := func(g *int, def int) {
		switch {
		case *g == 0:
			*g = def
		case *g < 0:
			*g = 0
		}
	}
	gap(&s.maxGap, DefaultMaxGap)
	gap(&s.maxBitGap, DefaultMaxBitGap)
	if s.staleAfter == 0 {
		s.staleAfter = DefaultStaleAfter
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	return s
}

// checkURL accepts exactly tcp://host:port and returns host:port.
func checkURL(raw string, probs *configProblems) string {
	if !strings.HasPrefix(raw, "tcp://") {
		probs.add("url %q: scheme must be tcp (tcp://host:502)", raw)
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		probs.add("url %q: %v", raw, err)
		return ""
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		probs.add("url %q: only tcp://host:port is allowed", raw)
		return ""
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		probs.add("url %q: host is missing", raw)
		return ""
	}
	if port == "" {
		probs.add("url %q: port is missing (Modbus TCP usually listens on 502)", raw)
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		probs.add("url %q: port %q out of range 1..65535", raw, port)
		return ""
	}
	return net.JoinHostPort(host, port)
}

// checkAddress reports what is wrong with a, or "" when it can be read.
func checkAddress(a *model.ModbusAddress) string {
	if a.UnitID < 0 || a.UnitID > 255 {
		return fmt.Sprintf("unit id %d out of range 0..255", a.UnitID)
	}
	switch a.Area {
	case model.AreaCoil, model.AreaDiscreteInput:
		if a.Type != model.RawBool {
			return fmt.Sprintf("%s holds bits, type %s is not bool", a.Area, a.Type)
		}
		if a.Bit != -1 {
			return fmt.Sprintf("bit number on %s", a.Area)
		}
		return ""
	case model.AreaHoldingRegister, model.AreaInputRegister:
	default:
		return fmt.Sprintf("unknown area %d", a.Area)
	}
	if a.Type < model.RawBool || a.Type > model.RawString {
		return fmt.Sprintf("unknown type %d", a.Type)
	}
	if a.Bit != -1 && (a.Bit < 0 || a.Bit > 15) {
		return fmt.Sprintf("bit %d out of range 0..15", a.Bit)
	}
	if a.Bit >= 0 && a.Type != model.RawBool {
		return fmt.Sprintf("a register bit is a bool, not %s", a.Type)
	}
	if a.Order > model.OrderDCBA {
		return fmt.Sprintf("unknown byte order %d", a.Order)
	}
	if a.Type == model.RawString {
		if a.Length < 1 || a.Length > MaxRegisters {
			return fmt.Sprintf("string length %d out of range 1..%d registers", a.Length, MaxRegisters)
		}
		if a.Order != model.OrderABCD && a.Order != model.OrderBADC {
			return fmt.Sprintf("string byte order %s: only ABCD or BADC", a.Order)
		}
	} else if a.Length != 0 {
		return fmt.Sprintf("length on %s", a.Type)
	}
	if end := int(a.Register) + a.Type.Registers(a.Length) - 1; end > 65535 {
		return fmt.Sprintf("%s at %d ends at register %d, past 65535", a.Type, a.Register, end)
	}
	return ""
}
