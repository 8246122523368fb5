package gateway

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/unsgate/unsgate/model"
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
}

// SourceConfig is one device or server to read from.
type SourceConfig struct {
	Pos  model.Pos `yaml:"-"`
	Name string    `yaml:"-"`
	// URL is tcp://host:port for Modbus TCP.
	URL        model.At[string] `yaml:"url" unsgate:"required"`
	UnitID     int              `yaml:"unit_id"`
	Poll       time.Duration    `yaml:"poll"`
	Timeout    time.Duration    `yaml:"timeout"`
	Pause      time.Duration    `yaml:"pause"`
	MaxGap     int              `yaml:"max_gap"`
	MaxBitGap  int              `yaml:"max_bit_gap"`
	StaleAfter int              `yaml:"stale_after"`
	Backoff    BackoffConfig    `yaml:"backoff"`
}

// BackoffConfig bounds reconnect delays: capped exponential with jitter.
type BackoffConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// SinksConfig lists where harmonized points go.
type SinksConfig struct {
	MQTT *MQTTConfig `yaml:"mqtt"`
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
	return ParseConfig(path, data, os.LookupEnv)
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
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	for name, s := range c.Sources {
		if s == nil {
			continue
		}
		s.Name = name
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
	if c.Sinks.MQTT == nil {
		if c.Broker == nil {
			c.Broker = &BrokerConfig{Pos: c.Pos}
		}
		if c.Broker.Listen.V == "" {
			c.Broker.Listen.V = DefaultBrokerListen
		}
	}
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
	if m := c.Sinks.MQTT; m != nil {
		if c.Broker != nil {
			diags.Add(c.Broker.Pos, "broker: the embedded broker runs only when sinks.mqtt is absent; remove one of them")
		}
		u, err := url.Parse(m.URL.V)
		switch {
		case err != nil:
			diags.Add(m.URL.Pos, "sinks.mqtt.url %q: %v", m.URL.V, err)
		case u.Scheme != "mqtt" && u.Scheme != "mqtts":
			diags.Add(m.URL.Pos, "sinks.mqtt.url %q: scheme must be mqtt:// or mqtts://", m.URL.V)
		case u.Host == "":
			diags.Add(m.URL.Pos, "sinks.mqtt.url %q: missing host", m.URL.V)
		}
		if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
			diags.Add(m.Pos, "sinks.mqtt.tls: cert_file and key_file go together")
		}
		for _, f := range []string{m.TLS.CAFile, m.TLS.CertFile, m.TLS.KeyFile} {
			if f == "" {
				continue
			}
			if _, err := os.Stat(f); err != nil {
				diags.Add(m.Pos, "sinks.mqtt.tls: %v", err)
			}
		}
		if m.MaxInflight < 0 || m.QueueLen < 0 {
			diags.Add(m.Pos, "sinks.mqtt: max_inflight and queue_len must not be negative")
		}
	}
	if b := c.Broker; b != nil && b.Listen.V != "" {
		if _, _, err := net.SplitHostPort(b.Listen.V); err != nil {
			diags.Add(b.Listen.Pos, "broker.listen %q: want host:port, e.g. 127.0.0.1:1883", b.Listen.V)
		}
	}
}

func (s *SourceConfig) validate(diags *model.Diagnostics) {
	at := s.URL.Pos
	u, err := url.Parse(s.URL.V)
	switch {
	case err != nil:
		diags.Add(at, "sources.%s.url %q: %v", s.Name, s.URL.V, err)
		return
	case u.Scheme == "opc.tcp":
		diags.Add(at, "sources.%s.url %q: OPC UA sources are not supported yet", s.Name, s.URL.V)
		return
	case u.Scheme != "tcp":
		diags.Add(at, "sources.%s.url %q: want tcp://host:port for Modbus TCP", s.Name, s.URL.V)
		return
	case u.Hostname() == "" || u.Port() == "":
		diags.Add(at, "sources.%s.url %q: want tcp://host:port (Modbus TCP usually uses port 502)", s.Name, s.URL.V)
	}
	if s.UnitID < 0 || s.UnitID > 255 {
		diags.Add(s.Pos, "sources.%s.unit_id %d: must be 0..255", s.Name, s.UnitID)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"poll", s.Poll}, {"timeout", s.Timeout}, {"pause", s.Pause}, {"backoff.initial", s.Backoff.Initial}, {"backoff.max", s.Backoff.Max}} {
		if d.v < 0 {
			diags.Add(s.Pos, "sources.%s.%s: must not be negative", s.Name, d.name)
		}
	}
	for _, v := range []struct {
		name string
		v    int
	}{{"max_gap", s.MaxGap}, {"max_bit_gap", s.MaxBitGap}, {"stale_after", s.StaleAfter}} {
		if v.v < -1 {
			diags.Add(s.Pos, "sources.%s.%s %d: use -1 to turn it off, 0 for the default, or a positive number", s.Name, v.name, v.v)
		}
	}
	if s.Backoff.Max != 0 && s.Backoff.Initial > s.Backoff.Max {
		diags.Add(s.Pos, "sources.%s.backoff: initial %v is longer than max %v", s.Name, s.Backoff.Initial, s.Backoff.Max)
	}
}
