package gateway

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The model version names the git commit of the models folder and says
// whether the folder has changes not committed.
func TestGitVersionOf(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	if gitVersionOf(dir) != nil {
		t.Fatal("a folder outside any work tree has a git version")
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	models := filepath.Join(dir, "models")
	if err := os.Mkdir(models, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(models, "line.yaml")
	if err := os.WriteFile(file, []byte("assets: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if gitVersionOf(file) != nil {
		t.Fatal("a work tree without commits has a git version")
	}
	git("add", ".")
	git("commit", "-q", "-m", "models")
	v := gitVersionOf(file)
	if v == nil || len(v.Commit) != 40 || v.Dirty {
		t.Fatalf("after the commit: %+v", v)
	}
	// A change elsewhere in the work tree does not make the models dirty.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v2 := gitVersionOf(models); v2 == nil || v2.Dirty || v2.Commit != v.Commit {
		t.Fatalf("change outside the models folder: %+v", v2)
	}
	if err := os.WriteFile(file, []byte("assets: [] # edited\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v3 := gitVersionOf(models); v3 == nil || !v3.Dirty {
		t.Fatalf("edited model file: %+v, want dirty", v3)
	}
}
