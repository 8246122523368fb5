package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/unsgate/unsgate/connectors/opcua"
)

// cmdBrowse walks an OPC UA server's address space and prints its
// variables, then a model skeleton binding them, ready to paste into a
// model file.
func cmdBrowse(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("browse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: unsgate browse ENDPOINT [flags]\n\nWalks an OPC UA server (opc.tcp://host:port) and prints its variables and a model skeleton.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	node := fs.String("node", "", "start node id (default: the Objects folder, i=85)")
	depth := fs.Int("depth", 0, "levels below the start node to walk (default 10)")
	source := fs.String("source", "ua1", "source `name` the skeleton's asset instance reads from")
	policy := fs.String("security-policy", "", "None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss (default: the most secure offered)")
	mode := fs.String("security-mode", "", "None, Sign or SignAndEncrypt (default: the strongest offered)")
	insecure := fs.Bool("allow-insecure-policies", false, "allow the deprecated Basic128Rsa15 and Basic256 policies")
	user := fs.String("username", "", "user name (default: anonymous)")
	passEnv := fs.String("password-env", "", "environment `variable` holding the password (keeps it out of the shell history)")
	certFile := fs.String("cert-file", "", "client certificate (default: created in the PKI folder)")
	keyFile := fs.String("key-file", "", "client private key")
	pki := fs.String("pki-dir", filepath.Join("data", "pki"), "PKI folder: own/, trusted/, rejected/ (the gateway's default is DATA_DIR/pki)")
	acceptAny := fs.Bool("accept-any-server-cert", false, "trust any server certificate (lab use only)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound for each request")
	endpoints, err := parseFlags(fs, args)
	if err != nil {
		return 2
	}
	if len(endpoints) != 1 {
		fs.Usage()
		return 2
	}
	cfg := opcua.Config{
		Name: "browse", Endpoint: endpoints[0],
		SecurityPolicy: *policy, SecurityMode: *mode, AllowInsecurePolicies: *insecure,
		Username: *user, CertFile: *certFile, KeyFile: *keyFile, PKIDir: *pki,
		AcceptAnyServerCert: *acceptAny, Timeout: *timeout,
	}
	if *passEnv != "" {
		cfg.Password = os.Getenv(*passEnv)
	}
	ctx, stop := signalContext()
	defer stop()

	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BROWSE PATH\tNODE ID\tDATA TYPE\tACCESS")
	var vars []opcua.BrowsedNode
	err = opcua.Browse(ctx, cfg, *node, *depth, func(n opcua.BrowsedNode) error {
		if n.Class != "Variable" {
			return nil
		}
		vars = append(vars, n)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.BrowsePath, n.NodeID, n.DataType, n.Access)
		return nil
	})
	tw.Flush()
	if err != nil {
		printErr(stderr, fmt.Errorf("browse %s: %w", endpoints[0], err))
		return 1
	}
	if ctx.Err() != nil {
		return 1
	}
	fmt.Fprintf(stdout, "\n# %d variables. Model skeleton (paste into a model file and adjust):\n\n", len(vars))
	if err := opcua.Skeleton(stdout, vars, *source); err != nil {
		printErr(stderr, err)
		return 1
	}
	return 0
}
