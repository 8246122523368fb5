package gateway

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/unsgate/unsgate/model"
)

// HTTPConfig is the gateway's web server: the status page, its JSON API,
// /metrics and the health endpoints. It is on by default, on loopback.
type HTTPConfig struct {
	Pos model.Pos `yaml:"-"`
	// Listen is host:port (default 127.0.0.1:8080). Any address beyond
	// loopback needs Token or Username and Password.
	Listen model.At[string] `yaml:"listen"`
	// Disabled turns the web server off.
	Disabled bool `yaml:"disabled"`
	// Token is accepted as "Authorization: Bearer <token>", and as the
	// password of basic auth with any user name (a browser's login prompt).
	Token model.At[string] `yaml:"token"`
	// Username and Password are basic-auth credentials.
	Username model.At[string] `yaml:"username"`
	Password model.At[string] `yaml:"password"`
}

// DefaultHTTPListen is where the web server listens by default: loopback
// only, where it needs no login.
const DefaultHTTPListen = "127.0.0.1:8080"

// credentials reports whether any login is configured. Empty values (say
// from ${TOKEN:-}) are none.
func (h *HTTPConfig) credentials() bool {
	return h.Token.V != "" || h.Username.V != "" && h.Password.V != ""
}

func (h *HTTPConfig) applyDefaults() {
	if h.Listen.V == "" && !h.Listen.Present() {
		h.Listen.V = DefaultHTTPListen
	}
}

func (h *HTTPConfig) validate(c *Config, diags *model.Diagnostics) {
	if h.Disabled {
		return
	}
	at := func(p model.Pos) model.Pos {
		switch {
		case p.Line > 0:
			return p
		case h.Pos.Line > 0:
			return h.Pos
		}
		return c.Pos
	}
	switch {
	case h.Username.V != "" && h.Password.V == "":
		diags.Add(at(h.Username.Pos), "http.username: basic auth needs http.password too")
	case h.Password.V != "" && h.Username.V == "":
		diags.Add(at(h.Password.Pos), "http.password: basic auth needs http.username too")
	}
	if msg := checkHTTPListen(h.Listen.V, h.credentials()); msg != "" {
		diags.Add(at(h.Listen.Pos), "http.listen %s: %s", h.Listen.V, msg)
	}
}

// checkHTTPListen checks a listen address: host:port, and credentials
// when the host is not loopback. It returns what is wrong, or "".
func checkHTTPListen(addr string, credentials bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "want host:port, e.g. 127.0.0.1:8080 (http: {disabled: true} turns the web server off)"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("port %q: want a number 0..65535", port)
	}
	if !credentials && !isLoopbackHost(host) {
		return "binding beyond loopback needs http.token or http.username/password"
	}
	return ""
}

// isLoopbackHost reports whether a listen host is loopback only: localhost
// or a loopback IP. An empty host, 0.0.0.0 or [::] listen on every
// interface, and any other name may resolve to anything.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // a zone: fe80::1%eth0
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SetHTTPListen replaces http.listen, for the --http-listen flag, and turns
// the web server on. Like the config, it refuses an address beyond
// loopback without credentials.
func (c *Config) SetHTTPListen(addr string) error {
	if msg := checkHTTPListen(addr, c.HTTP.credentials()); msg != "" {
		return fmt.Errorf("--http-listen %s: %s", addr, msg)
	}
	c.HTTP.Listen = model.At[string]{V: addr}
	c.HTTP.Disabled = false
	return nil
}
