package edge

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
)

// tempPrefix starts the name of every temporary file this package writes.
// Names starting with a dot are never valid object names, so a temporary
// file can be neither read nor overwritten through a store.
const tempPrefix = ".tmp-"

// fsOps are the two file system steps whose failure or absence matters to
// atomic publication. They are fields, not calls, only so tests can make a
// write fail half-way or simulate a file system without hard links.
type fsOps struct {
	sync func(f *os.File) error
	link func(root *os.Root, oldname, newname string) error
}

func defaultFSOps() fsOps {
	return fsOps{
		sync: (*os.File).Sync,
		link: (*os.Root).Link,
	}
}

// publish makes name (relative to root, whose parent directory must exist)
// refer to a complete file holding data, unless name already exists.
//
// The bytes go to a temporary file in the same directory, are flushed to
// stable storage, and are then hard-linked to name. link(2) fails if name
// exists, so of any number of concurrent publishers of one name, in this
// process or any other on the same file system, exactly one reports
// created=true and its bytes are the ones under name; name is never visible
// partially written. The directory is flushed afterwards so the new entry
// survives a crash.
//
// On a file system without hard links publish falls back to rename(2):
// name is still never partial, but two racing publishers may both report
// created=true and the last one's bytes win.
func publish(root *os.Root, name string, data []byte, perm fs.FileMode, ops fsOps) (created bool, err error) {
	dir := path.Dir(name)
	tmp, err := writeTemp(root, dir, data, perm, ops)
	if tmp == "" {
		return false, err
	}
	// Whatever happens the temporary name goes; after a successful link the
	// data lives on under name. A failed removal leaves a file that
	// NewLocal sweeps later, so it is not worth failing the write for.
	defer func() { _ = root.Remove(tmp) }()
	if err != nil {
		return false, fmt.Errorf("edge: write %s: %w", name, err)
	}

	linkErr := ops.link(root, tmp, name)
	switch {
	case linkErr == nil:
	case errors.Is(linkErr, fs.ErrExist):
		// Someone else published first; theirs stands.
		if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
			return false, fmt.Errorf("%w: names a directory or special file", ErrInvalidName)
		}
		return false, nil
	default:
		// No hard links here (FAT, some network and FUSE file systems).
		if _, err := root.Lstat(name); err == nil {
			return false, nil
		}
		if err := root.Rename(tmp, name); err != nil {
			return false, fmt.Errorf("edge: publish %s: link: %v; rename: %w", name, linkErr, err)
		}
	}
	if err := syncDir(root, dir); err != nil {
		return true, fmt.Errorf("edge: publish %s: %w", name, err)
	}
	return true, nil
}

// WriteFile replaces the file at path with data, atomically and durably:
// a reader sees the old file or the whole new one, never a part of it, and
// once WriteFile returns the new file survives a crash. Unlike publish it
// replaces an existing file. The temporary file is a tempPrefix name in
// the same directory.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	root, err := os.OpenRoot(filepath.Dir(name))
	if err != nil {
		return fmt.Errorf("edge: write %s: %w", name, err)
	}
	defer root.Close()
	base := filepath.Base(name)
	tmp, err := writeTemp(root, ".", data, perm, defaultFSOps())
	if tmp == "" {
		return err
	}
	defer func() { _ = root.Remove(tmp) }() // gone already after the rename
	if err != nil {
		return fmt.Errorf("edge: write %s: %w", name, err)
	}
	if err := root.Rename(tmp, base); err != nil {
		return fmt.Errorf("edge: write %s: %w", name, err)
	}
	if err := syncDir(root, "."); err != nil {
		return fmt.Errorf("edge: write %s: %w", name, err)
	}
	return nil
}

// writeTemp writes data, mode perm, flushed to stable storage, to a new
// temporary file in dir and returns its name (also on a failed write, so
// the caller can remove it; "" if none was created).
func writeTemp(root *os.Root, dir string, data []byte, perm fs.FileMode, ops fsOps) (string, error) {
	tmp, f, err := createTemp(root, dir, perm)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // exact mode, whatever the umask
	}
	if err == nil {
		err = ops.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return tmp, err
}

// createTemp creates a new temporary file in dir with an unpredictable name
// starting with tempPrefix, retrying on the (unlikely) collision.
func createTemp(root *os.Root, dir string, perm fs.FileMode) (string, *os.File, error) {
	var b [8]byte
	for range 16 {
		for i := range b {
			b[i] = byte(rand.Uint32())
		}
		name := path.Join(dir, tempPrefix+hex.EncodeToString(b[:]))
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return name, f, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", nil, fmt.Errorf("edge: create temporary file: %w", err)
		}
	}
	return "", nil, errors.New("edge: create temporary file: too many collisions")
}

// syncDir flushes a directory so that entries created or removed in it
// survive a crash. Windows cannot open directories for flushing; NTFS
// journals metadata anyway.
func syncDir(root *os.Root, dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
