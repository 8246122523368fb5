package gateway

import (
	"context"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/unsgate/unsgate/connectors/sim"
	"github.com/unsgate/unsgate/harmonize"
	"github.com/unsgate/unsgate/model"
)

// gopcua's server (the simulated OPC UA server of the demo and the tests)
// prints its node set import with the standard logger; the gateway logs
// through slog only, so the standard logger is silenced for the tests.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

// buildGateway is New on a config text (gw.yaml in a temporary folder,
// ${VAR} from vars) and a model text (m.yaml); it fails the test on any
// error. The caller runs it or closes its fan-out.
func buildGateway(t testing.TB, cfgText, modelText string, vars map[string]string) (*Config, *Gateway) {
	t.Helper()
	cfg, m, plan := compileGateway(t, cfgText, modelText, vars)
	g, err := New(cfg, m, plan, nil)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	return cfg, g
}

// listenPLC starts a simulated Modbus PLC on a free loopback port, closed
// when the test ends (Close may also be called before, to make it vanish).
func listenPLC(t *testing.T) *sim.Server {
	t.Helper()
	plc, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plc.Close() })
	return plc
}

// compileGateway parses cfgText (as gw.yaml in a temporary folder, with
// vars as the environment), loads modelText as m.yaml and compiles them,
// failing the test on any error.
func compileGateway(t testing.TB, cfgText, modelText string, vars map[string]string) (*Config, *model.Model, *harmonize.Plan) {
	t.Helper()
	cfg, err := ParseConfig(filepath.Join(t.TempDir(), "gw.yaml"), []byte(cfgText), env(vars))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	m, err := model.LoadFiles([]model.File{{Name: "m.yaml", Data: []byte(modelText)}})
	if err != nil {
		t.Fatalf("model: %v", err)
	}
	m, plan, err := CompileModel(cfg, m)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return cfg, m, plan
}

// runGateway runs g until the test ends, or until the returned cancel. It
// fails the test if Run ends before the gateway started, and at the end if
// Run returned an error or did not return within its own stop bound
// (shutdown_timeout and the sinks' slack) and 2 s more.
func runGateway(t testing.TB, g *Gateway) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx, started) }()
	select {
	case <-started:
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(g.cfg.ShutdownTimeout + shutdownSlack + 2*time.Second):
			t.Error("gateway did not stop")
		}
	})
	return cancel
}
