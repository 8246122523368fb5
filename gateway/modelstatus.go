package gateway

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ModelStatus is what the status page and /api/v1/status say about the
// model: which files run, which version, and how the last (re)load went.
type ModelStatus struct {
	Files []string `json:"files"`
	// Version is the content hash of the files (see ModelFilesVersion);
	// Kafka records carry it.
	Version string `json:"version"`
	// Git describes the models folder when it is in a git work tree.
	Git *GitVersion `json:"git,omitempty"`
	// LoadedAt is when the running model was loaded.
	LoadedAt time.Time `json:"loaded_at"`
	// LastReload is the last reload attempt (zero before the first);
	// LastResult "ok" or "failed"; Errors the diagnostics of a failed
	// one, each "file:line:col: message".
	LastReload time.Time `json:"last_reload,omitzero"`
	LastResult string    `json:"last_result,omitempty"`
	Errors     []string  `json:"errors,omitempty"`
}

// GitVersion is the commit of a folder's git work tree and whether the
// folder has changes not committed.
type GitVersion struct {
	Commit string `json:"commit"`
	Dirty  bool   `json:"dirty"`
}

// gitTimeout bounds each git command; a hung git must not hold up a load.
const gitTimeout = 5 * time.Second

// gitVersionOf asks git about the folder of path (a model file or
// folder): nil when git is not installed or the folder is not in a work
// tree. Dirty covers changes under that folder only.
func gitVersionOf(path string) *GitVersion {
	dir := path
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	run := func(args ...string) (string, bool) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0") // a status must not take the index lock
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err == nil
	}
	commit, ok := run("rev-parse", "--verify", "HEAD")
	if !ok || commit == "" {
		return nil
	}
	changes, ok := run("status", "--porcelain", "--untracked-files=normal", "--", ".")
	if !ok {
		return nil
	}
	return &GitVersion{Commit: commit, Dirty: changes != ""}
}
