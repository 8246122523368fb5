package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/unsgate/unsgate/connectors/opcua"
	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/sparkplug"
)

// Config is the gateway configuration file: who the gateway is, where its
// model files are, which sources it reads and where it publishes. Secrets
// come from the environment through ${VAR} references, never from model
// files.
type Config struct {
	Pos model.Pos `yaml:"-"`
	// File is the config file's path; relative paths in the config are
	// resolved against its directory.
	File string `yaml:"-"`

	ID       string   `yaml:"id" unsgate:"required"`
	DataDir  string   `yaml:"data_dir"`
	Models   []string `yaml:"models"`
	LogLevel string   `yaml:"log_level"`
	// Presence is the topic prefix (usually enterprise/site) under which the
	// gateway announces itself: {presence}/_gateways/{id}/status. Default:
	// the first two levels of the model's first asset.
	Presence        string                   `yaml:"presence"`
	ShutdownTimeout time.Duration            `yaml:"shutdown_timeout"`
	Sources         map[string]*SourceConfig `yaml:"sources"`
	Sinks           SinksConfig              `yaml:"sinks"`
	Broker          *BrokerConfig            `yaml:"broker"`
	Store           StoreConfig              `yaml:"store"`
	HTTP            HTTPConfig               `yaml:"http"`
	Reload          ReloadConfig             `yaml:"reload"`

	// fromDisk is set by LoadConfig: only such a config is watched and
	// read again by ReloadFiles.
	fromDisk bool
}

// ReloadConfig is how the gateway notices changed config and model files
// (see README, "Hot reload"). Both keys take effect at the reload that
// changes them.
type ReloadConfig struct {
	Pos model.Pos `yaml:"-"`
	// Watch checks the files for changes every Interval (default true);
	// with false only SIGHUP reloads.
	Watch *bool `yaml:"watch"`
	// Interval is how often the files are checked (default 2s). A change is
	// applied once the files have stayed the same for one more interval,
	// so an editor or a git checkout that writes several files is done.
	Interval time.Duration `yaml:"interval"`
}

// DefaultReloadInterval is how often the files are checked by default.
const DefaultReloadInterval = 2 * time.Second

// watching reports whether the files are watched, and how often.
func (r *ReloadConfig) watching() (time.Duration, bool) {
	return r.Interval, r.Watch == nil || *r.Watch
}

// StoreConfig is store and forward: every sink's queue is kept on disk
// too, so an outage of a broker, or a restart of the gateway, loses
// nothing (see README, "Delivery").
type StoreConfig struct {
	Pos model.Pos `yaml:"-"`
	// Disabled keeps the queues in memory only: an outage longer than the
	// memory queue, a crash or a restart then loses what was queued.
	Disabled bool `yaml:"disabled"`
	// Dir holds a folder per sink (default {data_dir}/queue).
	Dir model.At[string] `yaml:"dir"`
	// MaxBytes is each sink's budget on disk, e.g. 1GiB or 500MB (default
	// 1GiB). Over it, the oldest queued points are dropped and counted.
	MaxBytes model.At[string] `yaml:"max_bytes"`
	// Sync is how often queued data is flushed to the device (default 1s),
	// or "always" (before Publish returns; slower, for disks that must not
	// lose a second's points to a power cut).
	Sync model.At[string] `yaml:"sync"`

	// Parsed by validate.
	maxBytes int64
	sync     time.Duration
}

// StoreOptions is the parsed store configuration for the publisher; ok is
// false when the store is disabled.
func (s *StoreConfig) StoreOptions() (dir string, opts publish.StoreOptions, ok bool) {
	if s.Disabled {
		return "", publish.StoreOptions{}, false
	}
	return s.Dir.V, publish.StoreOptions{MaxBytes: s.maxBytes, SyncEvery: s.sync}, true
}

func (s *StoreConfig) validate(diags *model.Diagnostics) {
	s.maxBytes = publish.DefaultStoreBytes
	if s.MaxBytes.V != "" {
		n, err := parseBytes(s.MaxBytes.V)
		switch {
		case err != nil:
			diags.Add(s.MaxBytes.Pos, "store.max_bytes %q: %v", s.MaxBytes.V, err)
		case n < minStoreBytes:
			diags.Add(s.MaxBytes.Pos, "store.max_bytes %q: at least 1MiB", s.MaxBytes.V)
		default:
			s.maxBytes = n
		}
	}
	s.sync = publish.DefaultSyncEvery
	switch v := s.Sync.V; v {
	case "":
	case "always":
		s.sync = -1
	default:
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			diags.Add(s.Sync.Pos, "store.sync %q: want a duration such as 1s, or always", v)
		} else {
			s.sync = d
		}
	}
}

const minStoreBytes = 1 << 20

// minReloadInterval bounds how often the files are read; tests go this
// low, a box needs no less than the default.
const minReloadInterval = 10 * time.Millisecond

// parseBytes reads a size: a number of bytes, optionally with a unit: B,
// KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q (want B, KB, MB, GB, KiB, MiB, GiB)", unit)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, errors.New("want a size such as 1GiB or 500MB")
	}
	if f*mult > math.MaxInt64/2 {
		return 0, errors.New("too large")
	}
	return int64(f * mult), nil
}

// SourceConfig is one device or server to read from. The URL's scheme picks
// the protocol: tcp:// is Modbus TCP, opc.tcp:// is OPC UA. Keys of the
// other protocol are refused.
type SourceConfig struct {
	Pos  model.Pos `yaml:"-"`
	Name string    `yaml:"-"`
	// URL is tcp://host:port for Modbus TCP, opc.tcp://host:port[/path]
	// for OPC UA.
	URL     model.At[string] `yaml:"url" unsgate:"required"`
	Poll    time.Duration    `yaml:"poll"`
	Timeout time.Duration    `yaml:"timeout"`
	Backoff BackoffConfig    `yaml:"backoff"`

	// Modbus TCP.
	UnitID     model.At[int]           `yaml:"unit_id"`
	Pause      model.At[time.Duration] `yaml:"pause"`
	MaxGap     model.At[int]           `yaml:"max_gap"`
	MaxBitGap  model.At[int]           `yaml:"max_bit_gap"`
	StaleAfter model.At[int]           `yaml:"stale_after"`

	// OPC UA.
	OPCUA OPCUASourceConfig `yaml:",inline"`
}

// OPCUASourceConfig holds the keys only an OPC UA source takes. See
// connectors/opcua.Config for what each means.
type OPCUASourceConfig struct {
	Mode                     model.At[string]        `yaml:"mode"`
	SecurityPolicy           model.At[string]        `yaml:"security_policy"`
	SecurityMode             model.At[string]        `yaml:"security_mode"`
	AllowInsecurePolicies    model.At[bool]          `yaml:"allow_insecure_policies"`
	Username                 model.At[string]        `yaml:"username"`
	Password                 model.At[string]        `yaml:"password"`
	CertFile                 model.At[string]        `yaml:"cert_file"`
	KeyFile                  model.At[string]        `yaml:"key_file"`
	PKIDir                   model.At[string]        `yaml:"pki_dir"`
	AcceptAnyServerCert      model.At[bool]          `yaml:"accept_any_server_cert"`
	ApplicationURI           model.At[string]        `yaml:"application_uri"`
	PublishingInterval       model.At[time.Duration] `yaml:"publishing_interval"`
	SamplingInterval         model.At[time.Duration] `yaml:"sampling_interval"`
	QueueSize                model.At[int]           `yaml:"queue_size"`
	Deadband                 model.At[float64]       `yaml:"data_change_deadband"`
	MaxMonitoredItemsPerCall model.At[int]           `yaml:"max_monitored_items_per_call"`
	MaxNodesPerRead          model.At[int]           `yaml:"max_nodes_per_read"`
	KeepAlive                model.At[time.Duration] `yaml:"keepalive"`
	SessionTimeout           model.At[time.Duration] `yaml:"session_timeout"`
}

// BackoffConfig bounds reconnect delays: capped exponential with jitter.
type BackoffConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// SinksConfig lists where harmonized points go.
type SinksConfig struct {
	MQTT      *MQTTConfig      `yaml:"mqtt"`
	Kafka     *KafkaConfig     `yaml:"kafka"`
	Sparkplug *SparkplugConfig `yaml:"sparkplug"`
}

// SparkplugConfig makes the gateway a Sparkplug B 3.0 edge node (see
// publish/sparkplug), next to the JSON UNS or instead of it.
type SparkplugConfig struct {
	Pos model.Pos `yaml:"-"`
	// URL of the broker; default: the one of sinks.mqtt, else the embedded
	// broker.
	URL model.At[string] `yaml:"url"`
	// GroupID defaults to the site: the last level of the presence prefix
	// (the first two levels of the model's first asset).
	GroupID model.At[string] `yaml:"group_id"`
	// EdgeNodeID defaults to the gateway id.
	EdgeNodeID model.At[string] `yaml:"edge_node_id"`
	// PrimaryHost is the host application id whose STATE the node waits
	// for before its births.
	PrimaryHost model.At[string] `yaml:"primary_host"`
	// Aliases in DATA messages (default true).
	Aliases *bool `yaml:"aliases"`
	// InsteadOfJSON publishes Sparkplug only: no JSON UNS on MQTT.
	InsteadOfJSON bool          `yaml:"instead_of_json"`
	ClientID      string        `yaml:"client_id"`
	Username      string        `yaml:"username"`
	Password      string        `yaml:"password"`
	TLS           TLSConfig     `yaml:"tls"`
	KeepAlive     time.Duration `yaml:"keepalive"`
}

// KafkaConfig is a Kafka cluster that receives every value (see
// publish/kafka). It may be configured with or without sinks.mqtt.
type KafkaConfig struct {
	Pos model.Pos `yaml:"-"`
	// Brokers are the seed brokers, host:port each.
	Brokers  []model.At[string] `yaml:"brokers" unsgate:"required"`
	ClientID string             `yaml:"client_id"`
	// TLS, when present (tls: {} for the system roots), turns TLS on.
	TLS  *KafkaTLSConfig  `yaml:"tls"`
	SASL *KafkaSASLConfig `yaml:"sasl"`
	// Topic is the default topic (uns.v1.values); routes send matching
	// UNS paths elsewhere, first match wins.
	Topic  model.At[string] `yaml:"topic"`
	Routes []KafkaRoute     `yaml:"routes"`
	// StateTopic, if set, gets every value too; create it with
	// cleanup.policy=compact.
	StateTopic  model.At[string]        `yaml:"state_topic"`
	Compression model.At[string]        `yaml:"compression"`
	Linger      model.At[time.Duration] `yaml:"linger"`
	BatchBytes  model.At[int]           `yaml:"batch_bytes"`
}

// KafkaTLSConfig holds the certificate files for a TLS listener.
type KafkaTLSConfig struct {
	Pos                model.Pos `yaml:"-"`
	CAFile             string    `yaml:"ca_file"`
	CertFile           string    `yaml:"cert_file"`
	KeyFile            string    `yaml:"key_file"`
	ServerName         string    `yaml:"server_name"`
	InsecureSkipVerify bool      `yaml:"insecure_skip_verify"`
}

// KafkaSASLConfig is SASL authentication: PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512. Put the password in the environment: password: ${VAR}.
type KafkaSASLConfig struct {
	Pos       model.Pos        `yaml:"-"`
	Mechanism model.At[string] `yaml:"mechanism" unsgate:"required"`
	Username  model.At[string] `yaml:"username" unsgate:"required"`
	Password  string           `yaml:"password"`
}

// KafkaRoute sends values whose UNS path matches an MQTT-style filter to a
// topic.
type KafkaRoute struct {
	Pos model.Pos `yaml:"-"`
	// Match is a UNS filter (by area, line, ...), Type an asset type of the
	// model; a value takes the route when it matches both (an absent one
	// matches everything).
	Match model.At[string] `yaml:"match"`
	Type  model.At[string] `yaml:"type"`
	Topic model.At[string] `yaml:"topic" unsgate:"required"`
}

// MQTTConfig is an external MQTT v5 broker. Without it the gateway runs an
// embedded broker (see BrokerConfig).
type MQTTConfig struct {
	Pos         model.Pos        `yaml:"-"`
	URL         model.At[string] `yaml:"url" unsgate:"required"`
	ClientID    string           `yaml:"client_id"`
	Username    string           `yaml:"username"`
	Password    string           `yaml:"password"`
	TLS         TLSConfig        `yaml:"tls"`
	KeepAlive   time.Duration    `yaml:"keepalive"`
	MaxInflight int              `yaml:"max_inflight"`
	QueueLen    int              `yaml:"queue_len"`
}

// TLSConfig holds certificate files for mqtts://.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// BrokerConfig configures the embedded MQTT broker, used when no external
// broker is configured under sinks.mqtt.
type BrokerConfig struct {
	Pos    model.Pos        `yaml:"-"`
	Listen model.At[string] `yaml:"listen"`
}

// DefaultBrokerListen is where the embedded broker listens by default:
// loopback only, so a box is not exposed by accident.
const DefaultBrokerListen = "127.0.0.1:1883"

// LoadConfig reads, expands ${VAR} references in, decodes and validates a
// gateway config file. The error is model.Diagnostics with every problem.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(path, data, os.LookupEnv)
	if cfg != nil {
		cfg.fromDisk = true
	}
	return cfg, err
}

// ParseConfig is LoadConfig on bytes already read; lookup resolves ${VAR}.
func ParseConfig(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var diags model.Diagnostics
	node, ds := model.ParseYAML(file, data)
	diags = append(diags, ds...)
	cfg := &Config{File: file}
	if node == nil && len(diags) == 0 {
		diags.Add(model.Pos{File: file, Line: 1, Col: 1}, "empty config: at least id is required")
	}
	if node != nil {
		expandEnv(file, node, lookup, &diags)
		model.DecodeNode(file, node, cfg, &diags)
	}
	if len(diags) == 0 {
		cfg.applyDefaults()
		cfg.validate(&diags)
	}
	if err := diags.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// expandEnv replaces ${VAR} and ${VAR:-default} in every scalar value (not
// in keys) before decoding, so positions stay those of the file. $$ is a
// literal $. An unset variable without default is an error at its place.
func expandEnv(file string, n *yaml.Node, lookup func(string) (string, bool), diags *model.Diagnostics) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			expandEnv(file, c, lookup, diags)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			expandEnv(file, n.Content[i], lookup, diags)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			if m == "$$" {
				return "$"
			}
			sub := envRef.FindStringSubmatch(m)
			if v, ok := lookup(sub[1]); ok {
				return v
			}
			if sub[2] != "" {
				return sub[2][2:]
			}
			diags.Add(model.Pos{File: file, Line: n.Line, Col: n.Column},
				"environment variable %s is not set (referenced as ${%s})", sub[1], sub[1])
			return ""
		})
		// A plain (unquoted) scalar is typed by its expanded text, so
		// unit_id: ${UNIT} is a number; a quoted one stays a string.
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = ""
		}
	}
}

func (c *Config) applyDefaults() {
	dir := filepath.Dir(c.File)
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	c.DataDir = resolvePath(dir, c.DataDir)
	for i, m := range c.Models {
		c.Models[i] = resolvePath(dir, m)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Store.Dir.V == "" {
		c.Store.Dir.V = filepath.Join(c.DataDir, "queue")
	} else {
		c.Store.Dir.V = resolvePath(dir, c.Store.Dir.V)
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Reload.Interval == 0 {
		c.Reload.Interval = DefaultReloadInterval
	}
	for name, s := range c.Sources {
		if s == nil {
			continue
		}
		s.Name = name
		if s.Protocol() == model.ProtocolOPCUA {
			o := &s.OPCUA
			for _, p := range []*string{&o.CertFile.V, &o.KeyFile.V, &o.PKIDir.V} {
				*p = resolvePath(dir, *p)
			}
			if o.PKIDir.V == "" {
				// One identity and one trust list per gateway, shared by
				// its OPC UA sources: a server's administrator trusts the
				// gateway once.
				o.PKIDir.V = filepath.Join(c.DataDir, "pki")
			}
		}
	}
	if m := c.Sinks.MQTT; m != nil {
		for _, p := range []*string{&m.TLS.CAFile, &m.TLS.CertFile, &m.TLS.KeyFile} {
			if *p != "" {
				*p = resolvePath(dir, *p)
			}
		}
		if m.ClientID == "" {
			m.ClientID = "unsgate-" + c.ID
		}
	}
	if k := c.Sinks.Kafka; k != nil {
		if k.TLS != nil {
			for _, p := range []*string{&k.TLS.CAFile, &k.TLS.CertFile, &k.TLS.KeyFile} {
				*p = resolvePath(dir, *p)
			}
		}
		if k.ClientID == "" {
			k.ClientID = "unsgate-" + c.ID
		}
	}
	if sp := c.Sinks.Sparkplug; sp != nil {
		for _, p := range []*string{&sp.TLS.CAFile, &sp.TLS.CertFile, &sp.TLS.KeyFile} {
			if *p != "" {
				*p = resolvePath(dir, *p)
			}
		}
		if !sp.EdgeNodeID.Valid() {
			sp.EdgeNodeID.V = c.ID
		}
	}
	c.HTTP.applyDefaults()
	if c.EmbeddedBroker() {
		if c.Broker == nil {
			c.Broker = &BrokerConfig{Pos: c.Pos}
		}
		if c.Broker.Listen.V == "" {
			c.Broker.Listen.V = DefaultBrokerListen
		}
	}
}

// EmbeddedBroker reports whether the gateway runs its own MQTT broker: when
// no MQTT broker is configured for what it publishes there.
func (c *Config) EmbeddedBroker() bool {
	sp := c.Sinks.Sparkplug
	return c.Sinks.MQTT == nil && !(sp != nil && sp.URL.Valid() && sp.InsteadOfJSON)
}

// JSONOverMQTT reports whether the JSON UNS is published on MQTT.
func (c *Config) JSONOverMQTT() bool {
	return c.Sinks.Sparkplug == nil || !c.Sinks.Sparkplug.InsteadOfJSON
}

func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) || dir == "" {
		return p
	}
	return filepath.Join(dir, p)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

func (c *Config) validate(diags *model.Diagnostics) {
	if !idPattern.MatchString(c.ID) {
		diags.Add(c.Pos, "id %q: use letters, digits, '-' and '_' (it becomes an MQTT topic level)", c.ID)
	}
	if len(c.Models) == 0 {
		diags.Add(c.Pos, "models: name at least one model file or directory")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		diags.Add(c.Pos, "log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Presence != "" {
		if err := model.ValidateTopic(c.Presence); err != nil {
			diags.Add(c.Pos, "presence %q: %v", c.Presence, err)
		}
	}
	names := make([]string, 0, len(c.Sources))
	for name := range c.Sources {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := c.Sources[name]
		if s == nil {
			diags.Add(c.Pos, "sources.%s: empty source", name)
			continue
		}
		if !idPattern.MatchString(name) {
			diags.Add(s.Pos, "source name %q: use letters, digits, '-' and '_'", name)
		}
		s.validate(diags)
	}
	if c.Broker != nil && !c.EmbeddedBroker() {
		diags.Add(c.Broker.Pos, "broker: the embedded broker runs only when no sink names an MQTT broker (sinks.mqtt, or sinks.sparkplug.url with instead_of_json); remove one of them")
	}
	if m := c.Sinks.MQTT; m != nil {
		validateMQTTClient(diags, "sinks.mqtt", m.Pos, m.URL, m.TLS, m.KeepAlive)
		if m.MaxInflight < 0 || m.QueueLen < 0 {
			diags.Add(m.Pos, "sinks.mqtt: max_inflight and queue_len must not be negative")
		}
	}
	if k := c.Sinks.Kafka; k != nil {
		k.validate(diags)
	}
	if sp := c.Sinks.Sparkplug; sp != nil {
		sp.validate(diags)
	}
	c.Store.validate(diags)
	c.HTTP.validate(c, diags)
	if r := c.Reload; r.Interval < minReloadInterval {
		diags.Add(r.Pos, "reload.interval %v: at least %v (the default is %v)", r.Interval, minReloadInterval, DefaultReloadInterval)
	}
	if b := c.Broker; b != nil && b.Listen.V != "" {
		if _, _, err := net.SplitHostPort(b.Listen.V); err != nil {
			diags.Add(b.Listen.Pos, "broker.listen %q: want host:port, e.g. 127.0.0.1:1883", b.Listen.V)
		}
	}
}

// Protocol is the source's protocol, from its URL scheme; 0 when the URL
// names neither.
func (s *SourceConfig) Protocol() model.Protocol {
	switch {
	case strings.HasPrefix(s.URL.V, "tcp://"):
		return model.ProtocolModbus
	case strings.HasPrefix(s.URL.V, "opc.tcp://"):
		return model.ProtocolOPCUA
	}
	return 0
}

// keyUse is a protocol-specific key and where it was written.
type keyUse struct {
	name    string
	present bool
	pos     model.Pos
}

func present[T any](name string, a model.At[T]) keyUse {
	return keyUse{name, a.Present(), a.Pos}
}

func (s *SourceConfig) modbusKeys() []keyUse {
	return []keyUse{present("unit_id", s.UnitID), present("pause", s.Pause), present("max_gap", s.MaxGap),
		present("max_bit_gap", s.MaxBitGap), present("stale_after", s.StaleAfter)}
}

func (s *SourceConfig) opcuaKeys() []keyUse {
	o := &s.OPCUA
	return []keyUse{present("mode", o.Mode), present("security_policy", o.SecurityPolicy), present("security_mode", o.SecurityMode),
		present("allow_insecure_policies", o.AllowInsecurePolicies), present("username", o.Username), present("password", o.Password),
		present("cert_file", o.CertFile), present("key_file", o.KeyFile), present("pki_dir", o.PKIDir),
		present("accept_any_server_cert", o.AcceptAnyServerCert), present("application_uri", o.ApplicationURI),
		present("publishing_interval", o.PublishingInterval), present("sampling_interval", o.SamplingInterval),
		present("queue_size", o.QueueSize), present("data_change_deadband", o.Deadband),
		present("max_monitored_items_per_call", o.MaxMonitoredItemsPerCall), present("max_nodes_per_read", o.MaxNodesPerRead),
		present("keepalive", o.KeepAlive), present("session_timeout", o.SessionTimeout)}
}

func (s *SourceConfig) validate(diags *model.Diagnostics) {
	at := s.URL.Pos
	u, err := url.Parse(s.URL.V)
	switch {
	case err != nil:
		diags.Add(at, "sources.%s.url %q: %v", s.Name, s.URL.V, err)
		return
	case u.Scheme == "opc.tcp":
		if u.Hostname() == "" {
			diags.Add(at, "sources.%s.url %q: want opc.tcp://host:port[/path] (OPC UA usually uses port 4840)", s.Name, s.URL.V)
		}
		for _, k := range s.modbusKeys() {
			if k.present {
				diags.Add(k.pos, "sources.%s.%s: only applies to Modbus sources (tcp://); this source is OPC UA", s.Name, k.name)
			}
		}
		s.validateOPCUA(diags)
	case u.Scheme == "tcp":
		if u.Hostname() == "" || u.Port() == "" {
			diags.Add(at, "sources.%s.url %q: want tcp://host:port (Modbus TCP usually uses port 502)", s.Name, s.URL.V)
		}
		for _, k := range s.opcuaKeys() {
			if k.present {
				diags.Add(k.pos, "sources.%s.%s: only applies to OPC UA sources (opc.tcp://); this source is Modbus TCP", s.Name, k.name)
			}
		}
		s.validateModbus(diags)
	default:
		diags.Add(at, "sources.%s.url %q: want tcp://host:port for Modbus TCP or opc.tcp://host:port for OPC UA", s.Name, s.URL.V)
		return
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"poll", s.Poll}, {"timeout", s.Timeout}, {"backoff.initial", s.Backoff.Initial}, {"backoff.max", s.Backoff.Max}} {
		if d.v < 0 {
			diags.Add(s.Pos, "sources.%s.%s: must not be negative", s.Name, d.name)
		}
	}
	if s.Backoff.Max != 0 && s.Backoff.Initial > s.Backoff.Max {
		diags.Add(s.Pos, "sources.%s.backoff: initial %v is longer than max %v", s.Name, s.Backoff.Initial, s.Backoff.Max)
	}
}

func (s *SourceConfig) validateModbus(diags *model.Diagnostics) {
	if s.UnitID.V < 0 || s.UnitID.V > 255 {
		diags.Add(s.UnitID.Pos, "sources.%s.unit_id %d: must be 0..255", s.Name, s.UnitID.V)
	}
	if s.Pause.V < 0 {
		diags.Add(s.Pause.Pos, "sources.%s.pause: must not be negative", s.Name)
	}
	for _, v := range []struct {
		name string
		v    model.At[int]
	}{{"max_gap", s.MaxGap}, {"max_bit_gap", s.MaxBitGap}, {"stale_after", s.StaleAfter}} {
		if v.v.V < -1 {
			diags.Add(v.v.Pos, "sources.%s.%s %d: use -1 to turn it off, 0 for the default, or a positive number", s.Name, v.name, v.v.V)
		}
	}
}

func (s *SourceConfig) validateOPCUA(diags *model.Diagnostics) {
	o := &s.OPCUA
	if _, err := opcua.ParseMode(o.Mode.V); err != nil {
		diags.Add(o.Mode.Pos, "sources.%s.mode: %v", s.Name, err)
	}
	for _, d := range []struct {
		name string
		v    model.At[time.Duration]
	}{{"publishing_interval", o.PublishingInterval}, {"sampling_interval", o.SamplingInterval},
		{"keepalive", o.KeepAlive}, {"session_timeout", o.SessionTimeout}} {
		if d.v.V < 0 {
			diags.Add(d.v.Pos, "sources.%s.%s: must not be negative", s.Name, d.name)
		}
	}
	for _, v := range []struct {
		name string
		v    model.At[int]
	}{{"queue_size", o.QueueSize}, {"max_monitored_items_per_call", o.MaxMonitoredItemsPerCall}, {"max_nodes_per_read", o.MaxNodesPerRead}} {
		if v.v.V < 0 {
			diags.Add(v.v.Pos, "sources.%s.%s %d: must not be negative (0 = the default)", s.Name, v.name, v.v.V)
		}
	}
	if d := o.Deadband.V; d < 0 || math.IsNaN(d) || math.IsInf(d, 0) {
		diags.Add(o.Deadband.Pos, "sources.%s.data_change_deadband %v: must be a finite number >= 0", s.Name, d)
	}
	for _, f := range []model.At[string]{o.CertFile, o.KeyFile} {
		if f.V == "" {
			continue
		}
		if _, err := os.Stat(f.V); err != nil {
			diags.Add(f.Pos, "sources.%s: %v", s.Name, err)
		}
	}
	// Security names, pairs and the PKI requirement are the connector's
	// rules.
	cfg := s.opcuaConfig("", nil)
	for _, p := range opcua.CheckSecurity(&cfg) {
		pos := s.Pos
		for _, k := range s.opcuaKeys() { // point at the key the sentence is about
			if k.present && strings.HasPrefix(p, k.name+" ") {
				pos = k.pos
				break
			}
		}
		diags.Add(pos, "sources.%s: %s", s.Name, p)
	}
}

// opcuaConfig is the connector config of an OPC UA source; mode and
// numbers must have been validated.
func (s *SourceConfig) opcuaConfig(appURI string, tags []opcua.Tag) opcua.Config {
	o := &s.OPCUA
	mode, _ := opcua.ParseMode(o.Mode.V)
	return opcua.Config{
		Name: s.Name, Endpoint: s.URL.V,
		SecurityPolicy: o.SecurityPolicy.V, SecurityMode: o.SecurityMode.V, AllowInsecurePolicies: o.AllowInsecurePolicies.V,
		Username: o.Username.V, Password: o.Password.V,
		CertFile: o.CertFile.V, KeyFile: o.KeyFile.V, PKIDir: o.PKIDir.V,
		AcceptAnyServerCert: o.AcceptAnyServerCert.V, ApplicationURI: cmp.Or(o.ApplicationURI.V, appURI),
		Mode: mode, PublishingInterval: o.PublishingInterval.V, SamplingInterval: o.SamplingInterval.V,
		QueueSize: o.QueueSize.V, Deadband: o.Deadband.V, Poll: s.Poll,
		MaxMonitoredItemsPerCall: o.MaxMonitoredItemsPerCall.V, MaxNodesPerRead: o.MaxNodesPerRead.V,
		Timeout: s.Timeout, KeepAlive: o.KeepAlive.V, SessionTimeout: o.SessionTimeout.V,
		Tags: tags,
	}
}

// validate checks sinks.sparkplug, each problem at its key.
func (sp *SparkplugConfig) validate(diags *model.Diagnostics) {
	validateMQTTClient(diags, "sinks.sparkplug", sp.Pos, sp.URL, sp.TLS, sp.KeepAlive)
	for _, id := range []struct {
		key string
		v   model.At[string]
	}{{"group_id", sp.GroupID}, {"edge_node_id", sp.EdgeNodeID}, {"primary_host", sp.PrimaryHost}} {
		if !id.v.Valid() || id.key == "primary_host" && id.v.V == "" { // empty: none
			continue
		}
		if why := sparkplug.ValidID(id.v.V); why != "" {
			pos := id.v.Pos
			if pos.Line == 0 {
				pos = sp.Pos
			}
			diags.Add(pos, "sinks.sparkplug.%s %q %s", id.key, id.v.V, why)
		}
	}
}

// validateMQTTClient checks what sinks.mqtt and sinks.sparkplug share: the
// url (when given), the TLS files and the keepalive.
func validateMQTTClient(diags *model.Diagnostics, key string, pos model.Pos, u model.At[string], tls TLSConfig, keepalive time.Duration) {
	if u.Valid() {
		parsed, err := url.Parse(u.V)
		switch {
		case err != nil:
			diags.Add(u.Pos, "%s.url %q: %v", key, u.V, err)
		case parsed.Scheme != "mqtt" && parsed.Scheme != "mqtts":
			diags.Add(u.Pos, "%s.url %q: scheme must be mqtt:// or mqtts://", key, u.V)
		case parsed.Host == "":
			diags.Add(u.Pos, "%s.url %q: missing host", key, u.V)
		case parsed.Scheme == "mqtt" && tls != (TLSConfig{}):
			diags.Add(u.Pos, "%s.url %q: tls files need an mqtts:// url", key, u.V)
		}
	}
	if (tls.CertFile == "") != (tls.KeyFile == "") {
		diags.Add(pos, "%s.tls: cert_file and key_file go together", key)
	}
	for _, f := range []string{tls.CAFile, tls.CertFile, tls.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			diags.Add(pos, "%s.tls: %v", key, err)
		}
	}
	if keepalive != 0 && (keepalive < time.Second || keepalive > math.MaxUint16*time.Second) {
		diags.Add(pos, "%s.keepalive %v: use 1s to 18h12m15s (65535 s), or leave it out for the default", key, keepalive)
	}
}

// validate checks sinks.kafka with the Kafka sink's own rules, each
// problem at the key it is about.
func (k *KafkaConfig) validate(diags *model.Diagnostics) {
	if len(k.Brokers) == 0 {
		diags.Add(k.Pos, "sinks.kafka.brokers: name at least one seed broker (host:port)")
	}
	for _, b := range k.Brokers {
		if err := kafka.CheckBroker(b.V); err != nil {
			diags.Add(b.Pos, "sinks.kafka.brokers: %v", err)
		}
	}
	for _, t := range []struct {
		key string
		v   model.At[string]
	}{{"topic", k.Topic}, {"state_topic", k.StateTopic}} {
		if t.v.Valid() {
			if err := kafka.CheckTopicName(t.v.V); err != nil {
				diags.Add(t.v.Pos, "sinks.kafka.%s: %v", t.key, err)
			}
		}
	}
	for i, r := range k.Routes {
		if r.Match.V == "" && r.Type.V == "" {
			diags.Add(r.Pos, "sinks.kafka.routes[%d]: give match (a UNS filter such as acme/munich/bottling/#), type (an asset type of the model) or both", i)
		}
		if r.Match.Valid() {
			if err := kafka.CheckFilter(r.Match.V); err != nil {
				diags.Add(r.Match.Pos, "sinks.kafka.routes[%d].match %q: %v", i, r.Match.V, err)
			}
		}
		if r.Topic.Valid() {
			if err := kafka.CheckTopicName(r.Topic.V); err != nil {
				diags.Add(r.Topic.Pos, "sinks.kafka.routes[%d].topic: %v", i, err)
			}
		}
	}
	if k.Compression.Valid() {
		if _, err := kafka.ParseCompression(k.Compression.V); err != nil {
			diags.Add(k.Compression.Pos, "sinks.kafka.%v", err)
		}
	}
	if k.Linger.V < 0 || k.Linger.V > time.Minute {
		diags.Add(k.Linger.Pos, "sinks.kafka.linger %v: want 0 (the default, %v) up to 1m", k.Linger.V, kafka.DefaultLinger)
	}
	if k.BatchBytes.V < 0 || k.BatchBytes.V > 1<<30 {
		diags.Add(k.BatchBytes.Pos, "sinks.kafka.batch_bytes %d: want 0 (the default, %d) up to %d", k.BatchBytes.V, kafka.DefaultBatchBytes, 1<<30)
	}
	if s := k.SASL; s != nil && s.Mechanism.Valid() {
		if err := kafka.CheckMechanism(s.Mechanism.V); err != nil {
			diags.Add(s.Mechanism.Pos, "sinks.kafka.sasl: %v", err)
		}
	}
	if t := k.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			diags.Add(t.Pos, "sinks.kafka.tls: cert_file and key_file go together")
		}
		for _, f := range []string{t.CAFile, t.CertFile, t.KeyFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				diags.Add(t.Pos, "sinks.kafka.tls: %v", err)
			}
		}
	}
}
