package mqtt

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/unsgate/unsgate/publish"
)

// Config configures a Sink. Zero values mean the defaults below.
type Config struct {
	// Name identifies the sink in logs and stats (default "mqtt").
	Name string
	// URL of the broker: mqtt://host[:1883] or mqtts://host[:8883]; tcp://
	// is accepted for mqtt://, ssl:// and tls:// for mqtts://.
	URL string
	// ClientID defaults to "unsgate-{GatewayID}", or a random id without one.
	ClientID string
	// Username and Password for the broker; empty means anonymous.
	Username, Password string
	// CAFile verifies the broker's certificate (default: the system roots).
	// CertFile and KeyFile are the client certificate, both or neither.
	// They are only valid with mqtts://.
	CAFile, CertFile, KeyFile string
	// InsecureSkipVerify disables verification of the broker's certificate.
	// For tests only.
	InsecureSkipVerify bool
	// KeepAlive is the MQTT keep alive (default 30s, whole seconds).
	KeepAlive time.Duration
	// ConnectTimeout bounds dial, TLS handshake and CONNACK (default 10s).
	ConnectTimeout time.Duration
	// AckTimeout: with publishes in flight and no PUBACK for this long, the
	// connection is taken as dead and re-established (default 30s). It also
	// bounds each network write.
	AckTimeout time.Duration
	// GatewayID names the gateway in presence messages.
	GatewayID string
	// PresenceTopic, if set, receives a retained {"online":true,...} after
	// each connect, {"online":false,...} on clean shutdown, and the same as
	// the connection's retained Will. Requires GatewayID.
	PresenceTopic string
	// MaxInflight caps the publishes awaiting PUBACK; the broker's Receive
	// Maximum caps it further (default and upper bound of the default:
	// 1000; at most 65535).
	MaxInflight int
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// per failed attempt, with jitter (defaults 1s and 60s).
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger // nil: discard
}

// Defaults.
const (
	DefaultName           = "mqtt"
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultAckTimeout     = 30 * time.Second
	DefaultMaxInflight    = 1000
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = time.Minute
)

// ErrConfig marks every error New returns: the configuration is wrong and
// retrying cannot help.
var ErrConfig = errors.New("invalid MQTT sink configuration")

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	url *url.URL
	tls *tls.Config // nil for plain TCP
}

// validate applies defaults and checks everything, collecting all problems.
func validate(cfg Config) (*settings, error) {
	s := &settings{Config: cfg}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	u, t, uerrs := publish.ParseBrokerURL(s.URL, publish.BrokerTLS{CAFile: s.CAFile, CertFile: s.CertFile,
		KeyFile: s.KeyFile, InsecureSkipVerify: s.InsecureSkipVerify})
	s.url, s.tls = u, t
	errs = append(errs, uerrs...)

	if s.PresenceTopic != "" {
		if s.GatewayID == "" {
			bad("presence topic %q needs a gateway id", s.PresenceTopic)
		}
		if strings.ContainsAny(s.PresenceTopic, "+#\x00") {
			bad("presence topic %q must not contain wildcards", s.PresenceTopic)
		}
	}
	if s.ClientID == "" {
		if s.GatewayID != "" {
			s.ClientID = "unsgate-" + s.GatewayID
		} else {
			var b [6]byte
			_, _ = rand.Read(b[:])
			s.ClientID = "unsgate-" + hex.EncodeToString(b[:])
		}
	}

	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"keepalive", &s.KeepAlive, DefaultKeepAlive},
		{"connect timeout", &s.ConnectTimeout, DefaultConnectTimeout},
		{"ack timeout", &s.AckTimeout, DefaultAckTimeout},
		{"backoff min", &s.BackoffMin, DefaultBackoffMin},
		{"backoff max", &s.BackoffMax, DefaultBackoffMax},
	}
	for _, d := range durations {
		switch {
		case *d.v < 0:
			bad("%s must not be negative, got %v", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if s.KeepAlive > 0 && (s.KeepAlive < time.Second || s.KeepAlive > math.MaxUint16*time.Second) {
		bad("keepalive %v out of range (1s to 65535s)", s.KeepAlive)
	}
	if s.BackoffMax < s.BackoffMin {
		if cfg.BackoffMax == 0 {
			s.BackoffMax = s.BackoffMin
		} else {
			bad("backoff max %v is below backoff min %v", s.BackoffMax, s.BackoffMin)
		}
	}
	switch {
	case s.MaxInflight < 0 || s.MaxInflight > math.MaxUint16:
		bad("max inflight %d out of range (1 to 65535)", s.MaxInflight)
	case s.MaxInflight == 0:
		s.MaxInflight = DefaultMaxInflight
	}

	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return s, nil
}
