package opcua

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/unsgate/unsgate/model"
)

// Mode is how a source reads its nodes.
type Mode uint8

const (
	// ModeSubscribe creates monitored items in one subscription; the
	// server reports changes (the default).
	ModeSubscribe Mode = iota
	// ModePoll reads every node at the poll interval.
	ModePoll
)

func (m Mode) String() string {
	if m == ModePoll {
		return "poll"
	}
	return "subscribe"
}

// ParseMode maps a config word to a Mode; "" is subscribe.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "subscribe":
		return ModeSubscribe, nil
	case "poll":
		return ModePoll, nil
	}
	return 0, fmt.Errorf("unknown mode %q; use subscribe or poll", s)
}

// Defaults applied by New to zero fields of Config.
const (
	DefaultPublishingInterval = time.Second
	DefaultQueueSize          = 10
	DefaultPoll               = time.Second
	DefaultTimeout            = 5 * time.Second
	DefaultKeepAlive          = 5 * time.Second
	DefaultSessionTimeout     = time.Minute
	// Used when the server does not publish its operation limits.
	DefaultMaxMonitoredItemsPerCall = 1000
	DefaultMaxNodesPerRead          = 1000
)

// Config describes one OPC UA source: one server endpoint.
type Config struct {
	// Name is the gateway's source id; it prefixes errors and is copied
	// into every Sample.
	Name string
	// Endpoint is opc.tcp://host:port[/path].
	Endpoint string

	// SecurityPolicy is None, Basic256Sha256, Aes128_Sha256_RsaOaep,
	// Aes256_Sha256_RsaPss, or (only with AllowInsecurePolicies)
	// Basic128Rsa15 or Basic256. "" picks the most secure policy the
	// endpoint offers among the allowed ones.
	SecurityPolicy string
	// SecurityMode is None, Sign or SignAndEncrypt; "" picks the strongest
	// the server offers for the policy.
	SecurityMode string
	// AllowInsecurePolicies permits the deprecated Basic128Rsa15 and
	// Basic256 policies, which are refused otherwise.
	AllowInsecurePolicies bool
	// Username and Password select user-name authentication; anonymous
	// when Username is "".
	Username string
	Password string

	// CertFile and KeyFile are the gateway's application instance
	// certificate and private key (PEM or DER). When both are "", the
	// source creates them in PKIDir on first use and reuses them on every
	// start, so a server has to trust the gateway once.
	CertFile string
	KeyFile  string
	// PKIDir holds own/ (the created certificate and key), trusted/
	// (server certificates the gateway trusts) and rejected/ (refused
	// server certificates, to be moved to trusted/ to trust them).
	// Required unless AcceptAnyServerCert is set and the security policy
	// is None.
	PKIDir string
	// AcceptAnyServerCert trusts every server certificate (lab use only).
	AcceptAnyServerCert bool
	// ApplicationURI is the URI in the created certificate and in the
	// session; "" = urn:unsgate:HOSTNAME:NAME.
	ApplicationURI string

	// Mode is subscribe (default) or poll.
	Mode Mode
	// PublishingInterval is the subscription's publishing interval; 0 = 1s.
	PublishingInterval time.Duration
	// SamplingInterval is the default sampling interval of monitored
	// items; 0 = the publishing interval.
	SamplingInterval time.Duration
	// QueueSize is the default monitored item queue size (discard oldest);
	// 0 = 10.
	QueueSize int
	// Deadband is the default absolute data-change deadband; 0 = none.
	Deadband float64
	// Poll is the read interval in poll mode for tags without their own;
	// 0 = 1s.
	Poll time.Duration
	// MaxMonitoredItemsPerCall and MaxNodesPerRead cap request sizes. 0 =
	// the server's operation limit when it publishes one, else 1000; a
	// configured value larger than the server's limit is lowered to it.
	MaxMonitoredItemsPerCall int
	MaxNodesPerRead          int

	// Timeout bounds every request and the connect; 0 = 5s.
	Timeout time.Duration
	// KeepAlive is how long the server may stay silent before the session
	// is taken as broken; 0 = 5s.
	KeepAlive time.Duration
	// SessionTimeout is requested from the server; 0 = 1m.
	SessionTimeout time.Duration

	Tags []Tag
	// Logger receives the source's logs; nil discards them.
	Logger *slog.Logger
}

// Tag binds a key (the engine's binding key, echoed in Sample.Address) to
// a node. Tags with the same key are one binding: their addresses must name
// the same node; the smallest sampling interval, poll interval and deadband
// and the largest queue size win.
type Tag struct {
	Key  string // "" = Addr.Key()
	Addr model.OPCUAAddress
	Poll time.Duration // poll mode: 0 = Config.Poll
}

// CheckSecurity lists the security and identity problems of cfg, one
// sentence each, for a config validator that reports them before anything
// runs (New reports them too).
func CheckSecurity(cfg *Config) []string {
	var probs []string
	checkSecurity(cfg, &probs)
	return probs
}
