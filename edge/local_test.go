package edge

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newTestLocal(t *testing.T) *Local {
	t.Helper()
	l, err := NewLocal(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLocalConformance(t *testing.T) {
	t.Parallel()
	testObjectStore(t, func(t *testing.T) objectStore { return newTestLocal(t) })
}

// Without hard links Put falls back to rename. Sequential Puts must behave
// exactly as with links (concurrent ones may then report more than one
// creation, as documented, so that is not asserted).
func TestLocalWithoutHardLinks(t *testing.T) {
	t.Parallel()
	ctx, l := t.Context(), newTestLocal(t)
	links := 0
	l.ops.link = func(*os.Root, string, string) error {
		links++
		return &os.LinkError{Op: "link", Err: syscall.EPERM}
	}
	name := OutputName(testHash, "png")
	if created, err := l.Put(ctx, name, []byte("one"), "image/png"); err != nil || !created {
		t.Fatalf("Put = %v, %v; want true, nil", created, err)
	}
	if created, err := l.Put(ctx, name, []byte("two"), "image/png"); err != nil || created {
		t.Fatalf("second Put = %v, %v; want false, nil", created, err)
	}
	if got, err := l.Get(ctx, name); err != nil || string(got) != "one" {
		t.Fatalf("Get = %q, %v; want %q", got, err, "one")
	}
	if links != 1 {
		t.Errorf("link attempted %d times, want 1 (the second Put must stop at the existing object)", links)
	}
	assertNoTemps(t, l)
}

func TestLocalLayoutAndModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "objects")
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	name := OutputName(testHash, "png")
	if _, err := l.Put(t.Context(), name, []byte("png"), "image/png"); err != nil {
		t.Fatal(err)
	}
	// The logical name is the path: the directory can be synced to a
	// bucket as it is.
	data, err := os.ReadFile(filepath.Join(dir, "o", testHash+".png"))
	if err != nil || string(data) != "png" {
		t.Fatalf("file at the logical path = %q, %v", data, err)
	}
	if runtime.GOOS == "windows" {
		return
	}
	for path, want := range map[string]fs.FileMode{
		filepath.Join(dir, "o", testHash+".png"): 0o644,
		filepath.Join(dir, "o"):                  fs.ModeDir | 0o755,
		dir:                                      fs.ModeDir | 0o755,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("mode of %s = %v, want %v", path, fi.Mode(), want)
		}
	}
	assertNoTemps(t, l)
}

// At the moment the bytes are written and flushed but not yet published,
// the final name must not exist; after Put it must hold all of them.
func TestLocalPutIsAtomic(t *testing.T) {
	t.Parallel()
	ctx, l := t.Context(), newTestLocal(t)
	name := "k/v1-atomic.json"
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	synced := false
	l.ops.sync = func(f *os.File) error {
		synced = true
		if _, err := l.Get(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get before publication = %v, want ErrNotFound", err)
		}
		if _, err := l.Stat(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat before publication = %v, want ErrNotFound", err)
		}
		return f.Sync()
	}
	if created, err := l.Put(ctx, name, data, "application/json"); err != nil || !created {
		t.Fatalf("Put = %v, %v", created, err)
	}
	if !synced {
		t.Fatal("Put did not flush the file before publishing it")
	}
	if got, err := l.Get(ctx, name); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v; want %d", len(got), err, len(data))
	}
	assertNoTemps(t, l)
}

// A write that fails half-way leaves neither the object nor litter.
func TestLocalFailedPutLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx, l := t.Context(), newTestLocal(t)
	diskFull := errors.New("no space left on device")
	l.ops.sync = func(*os.File) error { return diskFull }
	name := OutputName(testHash, "gif")
	if _, err := l.Put(ctx, name, []byte("gif"), "image/gif"); !errors.Is(err, diskFull) {
		t.Fatalf("Put = %v, want the sync error", err)
	}
	if _, err := l.Get(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after failed Put = %v, want ErrNotFound", err)
	}
	assertNoTemps(t, l)

	l.ops = defaultFSOps()
	if created, err := l.Put(ctx, name, []byte("gif"), "image/gif"); err != nil || !created {
		t.Errorf("Put after recovery = %v, %v; want true, nil", created, err)
	}
}

func TestNewLocalRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, p := range []string{"o", "k/deep"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, age time.Duration) string {
		full := filepath.Join(dir, p)
		if err := os.WriteFile(full, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		mtime := time.Now().Add(-age)
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return full
	}
	stale := []string{
		write("o/"+tempPrefix+"0123456789abcdef", time.Hour),
		write("k/deep/"+tempPrefix+"fedcba9876543210", 48*time.Hour),
		write(tempPrefix+"00", staleTemp+time.Minute),
	}
	kept := []string{
		write("o/"+tempPrefix+"in-flight", 0), // another process may be publishing it
		write("o/"+testHash+".png", time.Hour),
		write("o/.other-hidden-file", time.Hour),
	}

	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temporary file %s survived NewLocal (%v)", p, err)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("NewLocal removed %s: %v", p, err)
		}
	}
	// Temporary files are never reachable as objects.
	if _, err := l.Get(t.Context(), "o/"+tempPrefix+"in-flight"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Get(temporary file) = %v, want ErrInvalidName", err)
	}
}

func TestLocalDirectoriesAreNotObjects(t *testing.T) {
	t.Parallel()
	ctx, l := t.Context(), newTestLocal(t)
	if _, err := l.Put(ctx, "a/b/c.png", []byte("c"), "image/png"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(directory) = %v, want ErrNotFound", err)
	}
	if _, err := l.Stat(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(directory) = %v, want ErrNotFound", err)
	}
	if _, err := l.Put(ctx, "a/b", []byte("x"), "text/plain"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Put(directory) = %v, want ErrInvalidName", err)
	}
	if err := l.Delete(ctx, "a/b"); err != nil {
		t.Errorf("Delete(directory) = %v, want nil", err)
	}
	if _, err := l.Put(ctx, "a/b/c.png/d", []byte("x"), "text/plain"); err == nil {
		t.Errorf("Put under a file succeeded")
	}
	if _, err := l.Get(ctx, "a/b/c.png/d"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get under a file = %v, want ErrNotFound", err)
	}

	// Delete removes the object and nothing else: empty parents stay.
	if err := l.Delete(ctx, "a/b/c.png"); err != nil {
		t.Fatal(err)
	}
	if fi, err := l.root.Stat("a/b"); err != nil || !fi.IsDir() {
		t.Errorf("Delete pruned the parent directory: %v", err)
	}
}

// A symbolic link planted in the directory cannot lead reads outside it.
func TestLocalStaysInsideItsDirectory(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("symbolic links need privileges on Windows")
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "o"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "o", "leak.png")); err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if data, err := l.Get(t.Context(), "o/leak.png"); err == nil {
		t.Fatalf("Get followed a link out of the store: %q", data)
	}
}

func assertNoTemps(t *testing.T, l *Local) {
	t.Helper()
	err := fs.WalkDir(l.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func BenchmarkLocalGet(b *testing.B) {
	l, err := NewLocal(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	data := bytes.Repeat([]byte{1}, 64<<10)
	name := OutputName(HashHex(data), "png")
	if _, err := l.Put(b.Context(), name, data, "image/png"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := l.Get(b.Context(), name); err != nil {
			b.Fatal(err)
		}
	}
}
