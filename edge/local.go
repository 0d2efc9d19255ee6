package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// ErrNotFound reports that no object has the given name. It wraps
// fs.ErrNotExist, so callers that only know io/fs can test for that.
var ErrNotFound = fmt.Errorf("edge: object not found: %w", fs.ErrNotExist)

// Info describes a stored object.
type Info struct {
	Name        string
	Size        int64
	ContentType string // from the name's extension, see ContentTypeForExt
	ModTime     time.Time
}

const (
	filePerm = 0o644
	dirPerm  = 0o755

	// staleTemp is how old a temporary file must be before NewLocal
	// removes it. A Put takes far less; the margin keeps a second process
	// opening the same directory (an admin command, say) from deleting a
	// file another process is about to publish.
	staleTemp = 15 * time.Minute
)

// Local is an object store in a local directory. An object named "o/x.png"
// is the file dir/o/x.png: names map to paths one to one, so the directory
// can be copied to or from a bucket as it is. Every file access goes through
// an os.Root, so even a symbolic link planted in the directory cannot lead
// outside it. Local is safe for concurrent use, also by several processes
// sharing one directory.
type Local struct {
	root *os.Root
	ops  fsOps
}

// NewLocal opens (creating it if needed) an object store in dir, and
// removes temporary files that a crash left behind. Those are never visible
// as objects; removing them only reclaims space.
func NewLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return nil, fmt.Errorf("edge: object directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("edge: object directory: %w", err)
	}
	l := &Local{root: root, ops: defaultFSOps()}
	if err := l.removeStaleTemps(time.Now().Add(-staleTemp)); err != nil {
		root.Close()
		return nil, err
	}
	return l, nil
}

// removeStaleTemps removes temporary files last modified before cutoff.
// Subdirectories it cannot read are skipped, not fatal: the store never
// writes there anyway.
func (l *Local) removeStaleTemps(cutoff time.Time) error {
	return fs.WalkDir(l.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return fmt.Errorf("edge: scan object directory: %w", err)
			}
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil
		}
		if err := l.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("edge: remove stale temporary file: %w", err)
		}
		return nil
	})
}

// Close releases the directory handle. Methods called after Close fail.
func (l *Local) Close() error {
	return l.root.Close()
}

// Put stores data under name unless an object of that name exists, and
// reports whether it created one. It is atomic and first-writer-wins: the
// name never refers to a partially written file, an existing object is
// never rewritten (created=false, nil error), and of concurrent Puts of one
// name exactly one reports created=true — its bytes are the ones stored —
// while the others report false. That holds across processes too, on any
// file system with hard links; without them Put falls back to rename and
// several racing Puts may report true, the last one's bytes winning.
// The object is on stable storage when Put returns.
//
// contentType is not stored: Local derives it from the name's extension
// (see Stat). It is part of the signature for stores that keep metadata.
func (l *Local) Put(ctx context.Context, name string, data []byte, contentType string) (created bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := validateName(name); err != nil {
		return false, err
	}
	if fi, err := l.root.Lstat(name); err == nil {
		if !fi.Mode().IsRegular() {
			return false, fmt.Errorf("%w: names a directory or special file", ErrInvalidName)
		}
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, l.wrap("put", name, err)
	}
	if err := l.mkdirs(path.Dir(name)); err != nil {
		return false, l.wrap("put", name, err)
	}
	return publish(l.root, name, data, filePerm, l.ops)
}

// mkdirs creates dir and its missing parents with mode dirPerm, flushing
// each parent so the new directories survive a crash.
func (l *Local) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	if fi, err := l.root.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%w: a parent is a file", ErrInvalidName)
		}
		return nil
	}
	parent := path.Dir(dir)
	if err := l.mkdirs(parent); err != nil {
		return err
	}
	if err := l.root.Mkdir(dir, dirPerm); err != nil {
		if errors.Is(err, fs.ErrExist) { // a concurrent Put made it
			return nil
		}
		return err
	}
	if err := l.root.Chmod(dir, dirPerm); err != nil { // exact mode, whatever the umask
		return err
	}
	return syncDir(l.root, parent)
}

// Get returns the bytes of the named object, or an error wrapping
// ErrNotFound if there is none.
func (l *Local) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := validateName(name); err != nil {
		return nil, err
	}
	f, err := l.root.Open(name)
	if err != nil {
		return nil, l.wrap("get", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, l.wrap("get", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	// Objects are immutable once published, so the size cannot change
	// under us; ReadFull also catches a file truncated by someone else.
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, l.wrap("get", name, err)
	}
	return data, nil
}

// Stat describes the named object, or returns an error wrapping
// ErrNotFound if there is none.
func (l *Local) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := validateName(name); err != nil {
		return Info{}, err
	}
	fi, err := l.root.Stat(name)
	if err != nil {
		return Info{}, l.wrap("stat", name, err)
	}
	if !fi.Mode().IsRegular() {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return Info{
		Name:        name,
		Size:        fi.Size(),
		ContentType: ContentTypeForExt(path.Ext(name)),
		ModTime:     fi.ModTime(),
	}, nil
}

// Delete removes the named object; deleting an absent object is not an
// error. Directories are left in place, empty or not: they are not objects.
// The removal is on stable storage when Delete returns, so a deleted object
// does not come back after a crash.
func (l *Local) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateName(name); err != nil {
		return err
	}
	fi, err := l.root.Lstat(name)
	if err != nil {
		if isNotExist(err) {
			return nil
		}
		return l.wrap("delete", name, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := l.root.Remove(name); err != nil {
		if isNotExist(err) {
			return nil
		}
		return l.wrap("delete", name, err)
	}
	if err := syncDir(l.root, path.Dir(name)); err != nil {
		return l.wrap("delete", name, err)
	}
	return nil
}

// wrap turns a file system error into ours: a missing file, or a path
// through something that is not a directory, becomes ErrNotFound.
func (l *Local) wrap(op, name string, err error) error {
	if isNotExist(err) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return fmt.Errorf("edge: %s %s: %w", op, name, err)
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
