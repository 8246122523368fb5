package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/unsgate/unsgate/harmonize"
	"github.com/unsgate/unsgate/model"
	"github.com/unsgate/unsgate/publish"
	"github.com/unsgate/unsgate/publish/broker"
	"github.com/unsgate/unsgate/publish/kafka"
	"github.com/unsgate/unsgate/publish/mqtt"
	"github.com/unsgate/unsgate/publish/sparkplug"
)

// shutdownSlack is what a sink may need beyond the flush bound to announce
// itself offline and disconnect from a broker that has stopped answering.
const shutdownSlack = 5 * time.Second

// Gateway is one running unsgate instance: sources -> engine -> fan-out.
type Gateway struct {
	// cfg is the config the gateway was made with. Settings that cannot
	// change at run time are read from it; what a reload may change
	// (sources, sinks.mqtt, sinks.kafka, models, reload) is in applied.
	cfg      *Config
	presence string // the presence topic, fixed at New
	logger   *slog.Logger

	// mu serialises the engine: sources call emit from their own
	// goroutines, the engine is single-threaded by design, and Apply plus
	// Publish (which only encodes and enqueues) take microseconds, so a
	// mutex is cheaper than a channel hop and copies no samples. A reload
	// swaps plan and engine under it.
	mu     sync.Mutex
	plan   *harmonize.Plan
	engine *harmonize.Engine
	points []model.Point

	fanout    *publish.Fanout
	broker    *broker.Broker
	kafka     *kafka.Sink // added to the fan-out in Run, after the MQTT sink
	sparkplug *sparkplug.Sink
	spPrefix  string                      // asset path prefix cut from Sparkplug device ids
	model     atomic.Pointer[ModelStatus] // see ModelStatus; replaced whole, never changed in place

	// life guards what Run starts and Reload changes: the sources, the
	// reloadable sinks and the applied config. Reload holds it throughout.
	life      sync.Mutex
	applied   atomic.Pointer[Config] // written under life; read without it (the status page)
	running   bool                   // Run has started the sources and not begun to stop
	srcCtx    context.Context        // parent of the sources' contexts while running
	srcWG     sync.WaitGroup         // the sources' goroutines
	mqttSpec  *mqtt.Config           // the sinks.mqtt JSON sink's config; nil without one
	kafkaSpec *kafka.Config          // the Kafka sink's config, without its funcs; nil without one

	// srcMu guards sources, which is replaced whole (Stats reads it while a
	// reload may hold life for long).
	srcMu   sync.Mutex
	sources []*sourceRun // sorted by name

	// fileMu serialises ReloadFiles (the watcher and SIGHUP); fileSum is
	// the fingerprint of the files as they were last loaded; override, see
	// SetConfigOverride.
	fileMu   sync.Mutex
	fileSum  string
	override func(*Config) error

	// Status page: live holds every tag's latest point and recent
	// values (fed by emit and tick), web the HTTP server while Run runs.
	live *liveStore
	web  *webServer
}

// Load reads the gateway config at path, then its model files, compiles the
// plan and checks that every source the model names is configured. The
// error is model.Diagnostics listing every problem when the files are at
// fault.
func Load(path string) (*Config, *model.Model, *harmonize.Plan, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, nil, nil, err
	}
	m, plan, err := LoadModel(cfg, cfg.Models...)
	if err != nil && !errors.As(err, new(model.Diagnostics)) {
		err = fmt.Errorf("%s: models: %w", cfg.File, err) // which config named the missing path
	}
	return cfg, m, plan, err
}

// LoadModel loads and compiles model files and checks them against cfg.
func LoadModel(cfg *Config, paths ...string) (*model.Model, *harmonize.Plan, error) {
	m, err := model.Load(paths...)
	var diags model.Diagnostics
	if errors.As(err, &diags) && m != nil {
		// Report the expression problems of the partial model in the
		// same pass, so a file is fixed in one go. Only those: anything
		// else harmonize finds there follows from what the loader said.
		var cds model.Diagnostics
		if _, cerr := harmonize.Compile(m); errors.As(cerr, &cds) {
			for _, d := range cds {
				if strings.HasPrefix(d.Msg, "expression") || strings.HasPrefix(d.Msg, "cycle") {
					diags = append(diags, d)
				}
			}
		}
		return nil, nil, diags.Err()
	}
	if err != nil {
		return nil, nil, err
	}
	return CompileModel(cfg, m)
}

// CompileModel compiles a loaded model and, when cfg is not nil, checks that
// every source the model refers to exists in the config.
func CompileModel(cfg *Config, m *model.Model) (*model.Model, *harmonize.Plan, error) {
	plan, err := harmonize.Compile(m)
	if err != nil {
		return nil, nil, err
	}
	if cfg != nil {
		var diags model.Diagnostics
		checkSources(cfg, plan, &diags)
		checkProtocols(cfg, m, &diags)
		checkRouteTypes(cfg, m, &diags)
		if err := diags.Err(); err != nil {
			return nil, nil, err
		}
	}
	return m, plan, nil
}

// defaultAppURI is the OPC UA application URI of a gateway: the same for
// all its sources, which share one client certificate.
func defaultAppURI(id string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "urn:unsgate:" + host + ":" + id
}

// checkProtocols reports tags whose address is of another protocol than
// their asset's source, at the asset's source key.
func checkProtocols(cfg *Config, m *model.Model, diags *model.Diagnostics) {
	for _, a := range m.Assets {
		sc := cfg.Sources[a.Source]
		if sc == nil || sc.Protocol() == 0 {
			continue
		}
		for _, t := range a.Tags {
			if t.Address == nil || t.Address.Protocol == 0 || t.Address.Protocol == sc.Protocol() {
				continue
			}
			diags.Add(a.SourcePos, "asset %s: tag %s has %s address %q, but source %q is %s source (%s)",
				a.Path, t.Name, protoName(t.Address.Protocol), t.Address.Text, a.Source, protoName(sc.Protocol()), sc.URL.V)
			break
		}
	}
}

func protoName(p model.Protocol) string {
	if p == model.ProtocolOPCUA {
		return "an OPC UA"
	}
	return "a Modbus"
}

func checkSources(cfg *Config, plan *harmonize.Plan, diags *model.Diagnostics) {
	known := make([]string, 0, len(cfg.Sources))
	for name := range cfg.Sources {
		known = append(known, name)
	}
	for name, pos := range plan.SourceRefs() {
		if _, ok := cfg.Sources[name]; ok {
			continue
		}
		msg := fmt.Sprintf("unknown source %q: %s has no such source", name, cfg.File)
		if s := model.Suggest(name, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		diags.Add(pos, "%s", msg)
	}
}

// New builds a gateway from a validated config and compiled plan. It
// creates every source and sink, so configuration mistakes surface here,
// before anything connects.
func New(cfg *Config, m *model.Model, plan *harmonize.Plan, logger *slog.Logger) (*Gateway, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The model itself is not kept: the plan holds what runs, and the
	// loaded model is the largest structure a big plant has.
	g := &Gateway{cfg: cfg, presence: presenceTopic(cfg, m), plan: plan, logger: logger}
	g.applied.Store(cfg)
	if cfg.fromDisk {
		g.fileSum = filesSum(watchedPaths(cfg))
	}
	g.engine = harmonize.NewEngine(plan, harmonize.Options{Logger: logger})
	g.live = newLiveStore(plan.Tags())
	queueLen := 0
	if cfg.Sinks.MQTT != nil {
		queueLen = cfg.Sinks.MQTT.QueueLen
	}
	fopts := publish.Options{Logger: logger, FlushTimeout: cfg.ShutdownTimeout, QueueLen: queueLen}
	if dir, opts, ok := cfg.Store.StoreOptions(); ok {
		fopts.StoreDir, fopts.Store = dir, opts
	}
	g.fanout = publish.NewFanout(fopts)

	specs, err := sourceSpecs(cfg, plan)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(specs)) {
		src, err := g.newSource(name, specs[name])
		if err != nil {
			return nil, err
		}
		g.sources = append(g.sources, src)
	}

	if mc := g.jsonSinkSpec(cfg); mc != nil {
		sink, err := mqtt.New(*mc)
		if err != nil {
			return nil, fmt.Errorf("sinks.mqtt: %w", err)
		}
		if err := g.fanout.Add(sink); err != nil {
			return nil, fmt.Errorf("sinks.mqtt: store and forward: %w", err)
		}
		g.mqttSpec = mc
	}
	g.model.Store(newModelStatus(cfg, m))
	if sp := cfg.Sinks.Sparkplug; sp != nil {
		g.spPrefix = presencePrefix(cfg, m)
		if u := g.sparkplugURL(); u != "" {
			if err := g.addSparkplug(u); err != nil {
				return nil, err
			}
		}
	}
	if kc := kafkaSpec(cfg); kc != nil {
		sink, err := g.newKafka(kc)
		if err != nil {
			return nil, err
		}
		g.kafka, g.kafkaSpec = sink, kc
	}
	return g, nil
}

// sparkplugURL is the broker of the Sparkplug sink: its own, the one of
// sinks.mqtt, or "" for the embedded broker (known once it runs).
func (g *Gateway) sparkplugURL() string {
	if sp := g.cfg.Sinks.Sparkplug; sp.URL.Valid() {
		return sp.URL.V
	}
	if mc := g.cfg.Sinks.MQTT; mc != nil {
		return mc.URL.V
	}
	return ""
}

// addSparkplug makes the Sparkplug sink for the broker at u and adds it to
// the fan-out.
func (g *Gateway) addSparkplug(u string) error {
	sp := g.cfg.Sinks.Sparkplug
	c := sparkplug.Config{
		URL: u, ClientID: sp.ClientID, Username: sp.Username, Password: sp.Password,
		CAFile: sp.TLS.CAFile, CertFile: sp.TLS.CertFile, KeyFile: sp.TLS.KeyFile,
		InsecureSkipVerify: sp.TLS.InsecureSkipVerify, KeepAlive: sp.KeepAlive,
		GroupID: sp.GroupID.V, EdgeNodeID: sp.EdgeNodeID.V, PrimaryHost: sp.PrimaryHost.V,
		DevicePrefix: g.spPrefix, NoAliases: sp.Aliases != nil && !*sp.Aliases,
		StateDir: filepath.Join(g.cfg.DataDir, "sparkplug"), Logger: g.logger,
	}
	if mc := g.cfg.Sinks.MQTT; mc != nil && !sp.URL.Valid() {
		// Same broker as sinks.mqtt: same credentials unless given.
		if c.Username == "" {
			c.Username, c.Password = mc.Username, mc.Password
		}
		if c.CAFile == "" && c.CertFile == "" {
			c.CAFile, c.CertFile, c.KeyFile = mc.TLS.CAFile, mc.TLS.CertFile, mc.TLS.KeyFile
			c.InsecureSkipVerify = c.InsecureSkipVerify || mc.TLS.InsecureSkipVerify
		}
	}
	if c.GroupID == "" {
		c.GroupID = defaultGroupID(g.spPrefix, g.cfg.ID)
	}
	sink, err := sparkplug.New(c)
	if err != nil {
		return fmt.Errorf("sinks.sparkplug: %w", err)
	}
	if err := g.fanout.Add(sink); err != nil {
		return fmt.Errorf("sinks.sparkplug: store and forward: %w", err)
	}
	g.sparkplug = sink
	return nil
}

// defaultGroupID is the site: the last level of the presence prefix
// (enterprise/site), or the gateway id without one.
func defaultGroupID(prefix, id string) string {
	if prefix == "" {
		return id
	}
	return prefix[strings.LastIndexByte(prefix, '/')+1:]
}

// kafkaSpec is the Kafka sink's config for cfg, without Logger and
// ModelVersion (see newKafka), so that two can be compared; nil when cfg
// has no Kafka sink.
func kafkaSpec(cfg *Config) *kafka.Config {
	kc := cfg.Sinks.Kafka
	if kc == nil {
		return nil
	}
	c := kafka.Config{
		ClientID: kc.ClientID, Topic: kc.Topic.V, StateTopic: kc.StateTopic.V,
		Compression: kc.Compression.V, Linger: kc.Linger.V, BatchBytes: kc.BatchBytes.V,
		GatewayID: cfg.ID,
	}
	for _, b := range kc.Brokers {
		c.Brokers = append(c.Brokers, b.V)
	}
	for _, r := range kc.Routes {
		c.Routes = append(c.Routes, kafka.Route{Match: r.Match.V, Type: r.Type.V, Topic: r.Topic.V})
	}
	if t := kc.TLS; t != nil {
		c.TLS, c.CAFile, c.CertFile, c.KeyFile = true, t.CAFile, t.CertFile, t.KeyFile
		c.ServerName, c.InsecureSkipVerify = t.ServerName, t.InsecureSkipVerify
	}
	if s := kc.SASL; s != nil {
		c.SASL = kafka.SASL{Mechanism: s.Mechanism.V, Username: s.Username.V, Password: s.Password}
	}
	return &c
}

// newKafka makes the Kafka sink of spec.
func (g *Gateway) newKafka(spec *kafka.Config) (*kafka.Sink, error) {
	c := *spec
	c.ModelVersion, c.Logger = g.ModelVersion, g.logger
	sink, err := kafka.New(c)
	if err != nil {
		return nil, fmt.Errorf("sinks.kafka: %w", err)
	}
	return sink, nil
}

// ModelVersion identifies the model the gateway runs: a short hash of the
// model files' contents (see ModelFilesVersion), "" when unknown. Kafka
// records carry it in their model_version header.
func (g *Gateway) ModelVersion() string { return g.model.Load().Version }

// ModelStatus describes the running model and the last reload.
func (g *Gateway) ModelStatus() ModelStatus {
	st := *g.model.Load()
	st.Files = slices.Clone(st.Files)
	st.Errors = slices.Clone(st.Errors)
	return st
}

// SetModelVersion replaces the model version, for models that were not
// read from files on disk (the demo's embedded examples); they have no
// git version.
func (g *Gateway) SetModelVersion(v string) {
	st := *g.model.Load()
	st.Version = v
	st.Git = nil // no folder on disk to ask git about
	g.model.Store(&st)
}

// newModelStatus describes model m, just loaded for cfg.
func newModelStatus(cfg *Config, m *model.Model) *ModelStatus {
	st := &ModelStatus{Version: modelFilesVersion(m), LoadedAt: time.Now()}
	if m != nil {
		st.Files = slices.Clone(m.Files)
	}
	switch {
	case len(cfg.Models) > 0:
		st.Git = gitVersionOf(cfg.Models[0])
	case len(st.Files) > 0:
		st.Git = gitVersionOf(st.Files[0])
	}
	return st
}

// modelFilesVersion is ModelFilesVersion of the files m was loaded from,
// read again from disk; "" when one cannot be read (a model loaded from
// memory).
func modelFilesVersion(m *model.Model) string {
	if m == nil || len(m.Files) == 0 {
		return ""
	}
	files := make([]model.File, 0, len(m.Files))
	for _, name := range m.Files {
		data, err := os.ReadFile(name)
		if err != nil {
			return ""
		}
		files = append(files, model.File{Name: name, Data: data})
	}
	return ModelFilesVersion(files)
}

// ModelFilesVersion is a short content hash of model files: the first 12
// hex digits of a SHA-256 over each file's SHA-256, sorted, so it depends
// on the contents only, not on names, paths or order.
func ModelFilesVersion(files []model.File) string {
	sums := make([][sha256.Size]byte, len(files))
	for i, f := range files {
		sums[i] = sha256.Sum256(f.Data)
	}
	slices.SortFunc(sums, func(a, b [sha256.Size]byte) int { return bytes.Compare(a[:], b[:]) })
	h := sha256.New()
	for _, s := range sums {
		h.Write(s[:])
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// jsonSinkSpec is the config of the JSON UNS sink on the broker of
// sinks.mqtt; nil when cfg has none (no sinks.mqtt, the embedded broker,
// or Sparkplug instead of JSON).
func (g *Gateway) jsonSinkSpec(cfg *Config) *mqtt.Config {
	mc := cfg.Sinks.MQTT
	if mc == nil || !cfg.JSONOverMQTT() {
		return nil
	}
	c := g.mqttConfig(mc, mc.URL.V)
	return &c
}

func (g *Gateway) mqttConfig(mc *MQTTConfig, u string) mqtt.Config {
	return mqtt.Config{
		URL: u, ClientID: mc.ClientID, Username: mc.Username, Password: mc.Password,
		CAFile: mc.TLS.CAFile, CertFile: mc.TLS.CertFile, KeyFile: mc.TLS.KeyFile,
		InsecureSkipVerify: mc.TLS.InsecureSkipVerify, KeepAlive: mc.KeepAlive,
		GatewayID: g.cfg.ID, PresenceTopic: g.PresenceTopic(), MaxInflight: mc.MaxInflight,
		Logger: g.logger,
	}
}

// dialAddr is where the gateway's own client reaches the embedded broker: a
// wildcard listen address is dialled on loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// PresenceTopic is where the gateway announces itself (see presenceTopic).
func (g *Gateway) PresenceTopic() string { return g.presence }

// presenceTopic is {prefix}/_gateways/{id}/status (see presencePrefix).
func presenceTopic(cfg *Config, m *model.Model) string {
	prefix := presencePrefix(cfg, m)
	if prefix == "" {
		return "_gateways/" + cfg.ID + "/status"
	}
	return prefix + "/_gateways/" + cfg.ID + "/status"
}

// presencePrefix is the configured presence path or the first two levels
// of the model's first asset (enterprise/site with the default levels).
func presencePrefix(cfg *Config, m *model.Model) string {
	prefix := cfg.Presence
	if prefix == "" && m != nil && len(m.Assets) > 0 {
		levels := strings.Split(m.Assets[0].Path, "/")
		prefix = strings.Join(levels[:min(2, len(levels))], "/")
	}
	return prefix
}

// BrokerAddr is the embedded broker's bound address once Run has started
// it, or "".
func (g *Gateway) BrokerAddr() string {
	if g.broker == nil {
		return ""
	}
	return g.broker.Addr()
}

// emit is the sources' way in: it runs the engine on a batch and hands the
// resulting points to the fan-out, which never blocks.
// The unlock is deferred so that a panic (recovered by the supervisor as a
// failed session) cannot leave the engine locked and hang every source.
func (g *Gateway) emit(batch []model.Sample) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.points = g.engine.Apply(batch, g.points[:0])
	if len(g.points) > 0 {
		g.fanout.Publish(g.points)
		g.live.Record(g.points)
	}
}

func (g *Gateway) tick(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.points = g.engine.Tick(now, g.points[:0])
	if len(g.points) > 0 {
		g.fanout.Publish(g.points)
		g.live.Record(g.points)
	}
}

// Run starts the embedded broker (when no external one is configured), the
// sinks and the sources, and runs until ctx is done; then it stops the
// sources and gives the sinks up to the shutdown timeout to flush. started,
// if not nil, is closed once the broker (if any) listens and the sources
// and sinks are running.
func (g *Gateway) Run(ctx context.Context, started chan<- struct{}) error {
	// The sinks' stores stay open until here (Fanout.Run closes them too).
	defer g.fanout.Close()
	// The status page first: it shows the start-up too, and a port in
	// use stops the start before anything connects.
	stopHTTP, err := g.startHTTP()
	if err != nil {
		return err
	}
	defer stopHTTP()
	if g.cfg.EmbeddedBroker() {
		b, err := broker.Start(g.cfg.Broker.Listen.V, g.logger.With("component", "broker"))
		if err != nil {
			return fmt.Errorf("embedded broker on %s: %w (is another broker running? set broker.listen or --mqtt-listen)", g.cfg.Broker.Listen.V, err)
		}
		g.broker = b
		defer b.Close()
		// The sink is made here, not in New, because only now is the
		// bound address known (listen may say port 0).
		if g.cfg.JSONOverMQTT() {
			sink, err := mqtt.New(g.mqttConfig(&MQTTConfig{ClientID: "unsgate-" + g.cfg.ID}, "mqtt://"+dialAddr(b.Addr())))
			if err != nil {
				return fmt.Errorf("embedded broker client: %w", err)
			}
			if err := g.fanout.Add(sink); err != nil {
				return fmt.Errorf("embedded broker client: store and forward: %w", err)
			}
		}
		if g.cfg.Sinks.Sparkplug != nil && g.sparkplug == nil {
			if err := g.addSparkplug("mqtt://" + dialAddr(b.Addr())); err != nil {
				return err
			}
		}
	}
	if g.kafka != nil {
		if err := g.fanout.Add(g.kafka); err != nil {
			return fmt.Errorf("sinks.kafka: store and forward: %w", err)
		}
	}
	tags := g.plan.Tags()  // no reload before the sources run
	g.fanout.SetTags(tags) // every sink is added by now

	sinkCtx, stopSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSinks()
	fanDone := make(chan error, 1)
	go func() { fanDone <- g.fanout.Run(sinkCtx) }()

	settleHeap()
	g.life.Lock()
	g.srcCtx, g.running = ctx, true
	for _, s := range g.sourceList() {
		g.startSource(s)
	}
	g.life.Unlock()

	var wg sync.WaitGroup
	if g.cfg.fromDisk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.watch(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				g.tick(now)
			}
		}
	}()
	g.logger.Info("gateway running", "id", g.cfg.ID, "sources", len(g.sourceList()), "tags", len(tags),
		"broker", g.BrokerAddr())
	if started != nil {
		close(started)
	}

	<-ctx.Done()
	// A reload in progress ends first; none starts after.
	g.life.Lock()
	g.running = false
	g.life.Unlock()
	wg.Wait()
	g.srcWG.Wait()
	// Sources are stopped; now let the sinks drain within the bound.
	stopSinks()
	select {
	case err := <-fanDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	case <-time.After(g.cfg.ShutdownTimeout + shutdownSlack):
		return fmt.Errorf("sinks did not stop within %v", g.cfg.ShutdownTimeout)
	}
	g.logger.Info("gateway stopped", "id", g.cfg.ID)
	return nil
}

// settleHeap collects garbage and returns free memory to the OS, once the
// model has been loaded and compiled (and dropped). Loading a large model
// takes several times the memory the gateway keeps, and the garbage
// collector sets its next goal at twice what is live when it last ran: a
// collection during the load would let the heap grow to twice the load's
// peak before the next one, and the memory it touched stays resident.
// One collection here costs milliseconds, once.
func settleHeap() { debug.FreeOSMemory() }

// checkRouteTypes reports Kafka routes naming an asset type the model does
// not have.
func checkRouteTypes(cfg *Config, m *model.Model, diags *model.Diagnostics) {
	k := cfg.Sinks.Kafka
	if k == nil {
		return
	}
	types := map[string]bool{}
	for _, a := range m.Assets {
		types[a.Type] = true
	}
	for i, r := range k.Routes {
		if r.Type.V != "" && !types[r.Type.V] {
			names := slices.Sorted(maps.Keys(types))
			diags.Add(r.Type.Pos, "sinks.kafka.routes[%d].type %q: no asset of the model has this type (types: %s)", i, r.Type.V, strings.Join(names, ", "))
		}
	}
}
