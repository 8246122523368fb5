package kafka

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/unsgate/unsgate/publish"
)

// Config configures a Sink. Zero values mean the defaults below.
type Config struct {
	// Name identifies the sink in logs and stats (default "kafka").
	Name string
	// Brokers are the seed brokers, host:port each; the client discovers
	// the rest of the cluster from them.
	Brokers []string
	// ClientID names the client to the brokers (default "unsgate-{GatewayID}").
	ClientID string

	// TLS turns TLS on. CAFile verifies the brokers' certificates (default:
	// the system roots); CertFile and KeyFile are the client certificate,
	// both or neither; ServerName overrides the name checked against the
	// brokers' certificates (default: each broker's host).
	TLS                       bool
	CAFile, CertFile, KeyFile string
	ServerName                string
	// InsecureSkipVerify disables verification of the brokers'
	// certificates. For tests only.
	InsecureSkipVerify bool

	// SASL authenticates the client; a zero SASL means none.
	SASL SASL

	// Topic receives every value that no route claims (default
	// uns.v1.values).
	Topic string
	// Routes send values whose UNS path matches a filter to another topic;
	// the first match wins.
	Routes []Route
	// StateTopic, if set, receives every value record a second time. It is
	// meant to be a compacted topic (cleanup.policy=compact), which keeps
	// the latest value of every tag. The sink does not create it.
	StateTopic string

	// Compression of record batches: none, gzip, lz4 or zstd (default
	// gzip: the one codec every Kafka client decodes without extras).
	Compression string
	// Linger is how long a partition's batch waits for more records
	// (default 10ms).
	Linger time.Duration
	// BatchBytes caps a record batch before compression (default 1000012,
	// Kafka's default max.message.bytes). A record larger than this is
	// rejected. Keep it at or below the topics' max.message.bytes: the
	// broker refuses a batch above it as a whole.
	BatchBytes int

	// GatewayID goes into every record's gateway header.
	GatewayID string
	// ModelVersion, if set, returns the version of the model that produced
	// the values; a non-empty result goes into the model_version header.
	// It is called once per batch and must be cheap.
	ModelVersion func() string

	// MaxInflight caps the queue messages produced and not yet acknowledged
	// (default 8192).
	MaxInflight int
	// FlushTimeout bounds how long Run, after its context is done, waits
	// for what is in flight before it requeues the rest (default 2s).
	FlushTimeout time.Duration
	// MetadataMinAge is how soon the client may refresh cluster metadata
	// again (franz-go's default 5s when zero). Tests lower it so that
	// retries after an outage do not wait.
	MetadataMinAge time.Duration

	Logger *slog.Logger // nil: discard
}

// Route sends values to Topic when their UNS path matches Match, an
// MQTT-style filter (+ is one level, # is the rest, also none, and only
// last), and their asset's type in the model is Type. An empty Match or
// Type matches everything; one of them must be set.
type Route struct {
	Match string
	Type  string
	Topic string
}

// SASL is the SASL authentication of the client.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism          string
	Username, Password string
}

// Defaults.
const (
	DefaultName         = "kafka"
	DefaultTopic        = "uns.v1.values"
	DefaultCompression  = "gzip"
	DefaultLinger       = 10 * time.Millisecond
	DefaultBatchBytes   = 1000012
	DefaultMaxInflight  = 8192
	DefaultFlushTimeout = 2 * time.Second
)

// Compressions are the accepted compression names.
var Compressions = []string{"none", "gzip", "lz4", "zstd"}

// Mechanisms are the accepted SASL mechanisms.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// ErrConfig marks every error New returns: the configuration is wrong and
// retrying cannot help.
var ErrConfig = errors.New("invalid Kafka sink configuration")

// settings is a validated Config with defaults applied.
type settings struct {
	Config
	tls         *tls.Config
	sasl        sasl.Mechanism
	compression kgo.CompressionCodec
	routes      []route
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
	if len(s.Brokers) == 0 {
		bad("brokers: name at least one seed broker (host:port)")
	}
	for _, b := range s.Brokers {
		if err := CheckBroker(b); err != nil {
			errs = append(errs, err)
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

	if s.TLS {
		t, err := tlsConfig(s)
		if err != nil {
			errs = append(errs, err)
		}
		s.tls = t
	} else if s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" || s.InsecureSkipVerify {
		bad("TLS settings (ca_file, cert_file, key_file, server_name, insecure_skip_verify) need TLS turned on")
	}
	if s.SASL != (SASL{}) {
		m, err := saslMechanism(s.SASL)
		if err != nil {
			errs = append(errs, err)
		}
		s.sasl = m
	}

	if s.Topic == "" {
		s.Topic = DefaultTopic
	}
	if err := CheckTopicName(s.Topic); err != nil {
		bad("topic: %v", err)
	}
	if s.StateTopic != "" {
		if err := CheckTopicName(s.StateTopic); err != nil {
			bad("state topic: %v", err)
		}
	}
	for i, r := range s.Routes {
		var levels []string
		switch {
		case r.Match == "" && r.Type == "":
			bad("route %d: give match (a UNS filter), type (an asset type) or both", i+1)
		case r.Match != "":
			var err error
			if levels, err = parseFilter(r.Match); err != nil {
				bad("route %d: match %q: %v", i+1, r.Match, err)
			}
		}
		if err := CheckTopicName(r.Topic); err != nil {
			bad("route %d: topic: %v", i+1, err)
		}
		s.routes = append(s.routes, route{levels: levels, typ: r.Type, topic: r.Topic})
	}

	if s.Compression == "" {
		s.Compression = DefaultCompression
	}
	codec, err := ParseCompression(s.Compression)
	if err != nil {
		errs = append(errs, err)
	}
	s.compression = codec

	switch {
	case s.Linger < 0 || s.Linger > time.Minute:
		bad("linger %v out of range (0 to 1m; 0 means %v)", s.Linger, DefaultLinger)
	case s.Linger == 0:
		s.Linger = DefaultLinger
	}
	switch {
	case s.BatchBytes < 0 || s.BatchBytes > 1<<30:
		bad("batch bytes %d out of range (1 to %d)", s.BatchBytes, 1<<30)
	case s.BatchBytes == 0:
		s.BatchBytes = DefaultBatchBytes
	}
	switch {
	case s.MaxInflight < 0:
		bad("max inflight %d must not be negative", s.MaxInflight)
	case s.MaxInflight == 0:
		s.MaxInflight = DefaultMaxInflight
	}
	switch {
	case s.FlushTimeout < 0:
		bad("flush timeout %v must not be negative", s.FlushTimeout)
	case s.FlushTimeout == 0:
		s.FlushTimeout = DefaultFlushTimeout
	}
	if s.MetadataMinAge < 0 {
		bad("metadata min age %v must not be negative", s.MetadataMinAge)
	}

	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return s, nil
}

// CheckBroker checks that addr is host:port.
func CheckBroker(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("broker %q: want host:port, e.g. kafka1:9092", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("broker %q: port must be 1..65535", addr)
	}
	return nil
}

// CheckTopicName applies Kafka's rules for topic names: 1 to 249 of
// [A-Za-z0-9._-], not "." or "..".
func CheckTopicName(name string) error {
	switch {
	case name == "":
		return errors.New("empty topic name")
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a valid topic name", name)
	case len(name) > 249:
		return fmt.Errorf("topic name %q is longer than 249 characters", name[:20]+"...")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// ParseCompression returns the codec for a compression name (see
// Compressions).
func ParseCompression(name string) (kgo.CompressionCodec, error) {
	switch strings.ToLower(name) {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("compression %q: want one of %s", name, strings.Join(Compressions, ", "))
}

// CheckMechanism checks a SASL mechanism name (see Mechanisms).
func CheckMechanism(name string) error {
	for _, m := range Mechanisms {
		if strings.EqualFold(name, m) {
			return nil
		}
	}
	return fmt.Errorf("SASL mechanism %q: want one of %s", name, strings.Join(Mechanisms, ", "))
}

func saslMechanism(c SASL) (sasl.Mechanism, error) {
	if err := CheckMechanism(c.Mechanism); err != nil {
		return nil, err
	}
	if c.Username == "" {
		return nil, fmt.Errorf("SASL %s needs a username", c.Mechanism)
	}
	switch strings.ToUpper(c.Mechanism) {
	case "PLAIN":
		return plain.Auth{User: c.Username, Pass: c.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha256Mechanism(), nil
	default:
		return scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism(), nil
	}
}

func tlsConfig(s *settings) (*tls.Config, error) {
	t := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.ServerName,
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // explicit opt-in, documented as test-only
	}
	return t, publish.LoadClientTLS(t, s.CAFile, s.CertFile, s.KeyFile)
}
