package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"time"

	"github.com/unsgate/unsgate/model"
)

// The watcher polls: every interval it hashes the config file and the
// model files (what Load would read) and reloads once a change has held
// still for one more interval. Polling a few small files costs next to
// nothing, needs no dependency, and sees what event APIs miss on the
// mounts edge boxes have (network and overlay file systems, bind mounts
// into containers) and through renames (editors' atomic saves, git
// checkouts, symlink swaps of a deployed folder).

// watch reloads the files when they change, until ctx is done.
func (g *Gateway) watch(ctx context.Context) {
	pending := "" // a changed fingerprint, seen once, waiting to hold still
	t := time.NewTimer(g.watchInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg := g.appliedConfig()
		interval, on := cfg.Reload.watching()
		t.Reset(interval)
		if !on {
			pending = ""
			continue
		}
		sum := filesSum(watchedPaths(cfg))
		g.fileMu.Lock()
		last := g.fileSum
		g.fileMu.Unlock()
		switch {
		case sum == last:
			pending = ""
		case sum != pending:
			pending = sum
		default:
			pending = ""
			g.logger.Info("config or model files changed; reloading")
			_, _ = g.ReloadFiles() // logged and recorded in ModelStatus
		}
	}
}

func (g *Gateway) watchInterval() time.Duration {
	d, _ := g.appliedConfig().Reload.watching()
	return d
}

// watchedPaths are the config file and the model files and folders it
// names.
func watchedPaths(cfg *Config) []string {
	return append([]string{cfg.File}, cfg.Models...)
}

// filesSum is a fingerprint of what Load reads from paths: for a folder,
// its model files (model.YAMLFiles), their names and contents; for a file,
// its contents. A path that cannot be read counts as its error, so that
// its coming back is a change too.
func filesSum(paths []string) string {
	h := sha256.New()
	add := func(name string, data []byte, err error) {
		h.Write([]byte(name))
		h.Write([]byte{0})
		if err != nil {
			h.Write([]byte("error: " + err.Error()))
		} else {
			sum := sha256.Sum256(data)
			h.Write(sum[:])
		}
		h.Write([]byte{0})
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			data, err := os.ReadFile(p)
			add(p, data, err)
			continue
		}
		names, err := model.YAMLFiles(p)
		if err != nil {
			add(p, nil, err)
			continue
		}
		add(p, nil, nil)
		for _, name := range names {
			data, err := os.ReadFile(name)
			add(name, data, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
