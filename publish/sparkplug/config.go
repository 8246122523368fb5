package sparkplug

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/unsgate/unsgate/publish"
)

// Config configures a Sink. Zero values mean the defaults below.
type Config struct {
	// Name identifies the sink in logs, stats and its store folder
	// (default "sparkplug").
	Name string
	// URL of the broker: mqtt://host[:1883] or mqtts://host[:8883] (tcp://,
	// ssl:// and tls:// are accepted too).
	URL string
	// ClientID defaults to "unsgate-sparkplug-{EdgeNodeID}".
	ClientID string
	// Username and Password for the broker; empty means anonymous.
	Username, Password string
	// TLS (mqtts:// only): CAFile verifies the broker (default: system
	// roots); CertFile and KeyFile are the client certificate.
	CAFile, CertFile, KeyFile string
	InsecureSkipVerify        bool
	// KeepAlive is the MQTT keep alive (default 30s).
	KeepAlive time.Duration
	// Timeout bounds dial, CONNACK, SUBACK and every write (default 10s).
	Timeout time.Duration
	// GroupID and EdgeNodeID name the edge node: spBv1.0/{GroupID}/.../{EdgeNodeID}.
	GroupID, EdgeNodeID string
	// DevicePrefix is the asset path prefix cut from device ids (usually
	// enterprise/site): asset acme/munich/bottling/line1/filler1 with
	// prefix acme/munich is device bottling.line1.filler1. Assets outside
	// the prefix keep their whole path.
	DevicePrefix string
	// PrimaryHost, if set, is the Sparkplug host application id whose
	// STATE the edge node waits for before it publishes births.
	PrimaryHost string
	// NoAliases sends metric names in DATA messages instead of aliases.
	NoAliases bool
	// StateDir keeps what must survive a restart: the bdSeq counter and the
	// alias table. Empty: kept in memory only (tests).
	StateDir string
	// BackoffMin and BackoffMax bound the reconnect delay (defaults 1s, 60s).
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
}

// Defaults.
const (
	DefaultName       = "sparkplug"
	DefaultKeepAlive  = 30 * time.Second
	DefaultTimeout    = 10 * time.Second
	DefaultBackoffMin = time.Second
	DefaultBackoffMax = time.Minute
	// Namespace is the Sparkplug B topic namespace.
	Namespace = "spBv1.0"
)

// ErrConfig marks every error New returns.
var ErrConfig = errors.New("invalid Sparkplug sink configuration")

type settings struct {
	Config
	url *url.URL
	tls *tls.Config
}

// ValidID reports why s cannot be a Sparkplug group, edge node or device
// id ("" when it can): ids are non-empty UTF-8 without '+', '/' or '#'.
func ValidID(s string) string {
	switch {
	case s == "":
		return "is empty"
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsAny(s, "+/#"):
		return "contains '+', '/' or '#'"
	}
	return ""
}

func validate(cfg Config) (*settings, error) {
	s := &settings{Config: cfg}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.KeepAlive == 0 {
		s.KeepAlive = DefaultKeepAlive
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.BackoffMin == 0 {
		s.BackoffMin = DefaultBackoffMin
	}
	if s.BackoffMax == 0 {
		s.BackoffMax = DefaultBackoffMax
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if why := ValidID(s.GroupID); why != "" {
		bad("group id %q %s", s.GroupID, why)
	}
	if why := ValidID(s.EdgeNodeID); why != "" {
		bad("edge node id %q %s", s.EdgeNodeID, why)
	}
	if s.PrimaryHost != "" {
		if why := ValidID(s.PrimaryHost); why != "" {
			bad("primary host id %q %s", s.PrimaryHost, why)
		}
	}
	if s.ClientID == "" {
		s.ClientID = "unsgate-sparkplug-" + s.EdgeNodeID
	}
	if s.KeepAlive < time.Second || s.KeepAlive > 65535*time.Second {
		bad("keepalive %v: use 1s to 18h", s.KeepAlive)
	}
	if s.Timeout < 0 || s.BackoffMin < 0 || s.BackoffMax < s.BackoffMin {
		bad("timeout and backoff must be positive, backoff max >= min")
	}
	u, t, uerrs := publish.ParseBrokerURL(s.URL, publish.BrokerTLS{CAFile: s.CAFile, CertFile: s.CertFile,
		KeyFile: s.KeyFile, InsecureSkipVerify: s.InsecureSkipVerify})
	s.url, s.tls = u, t
	errs = append(errs, uerrs...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return s, nil
}
