package edge

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// objectStore is what every object store in this package provides; each
// one must pass testObjectStore.
type objectStore interface {
	Put(ctx context.Context, name string, data []byte, contentType string) (bool, error)
	Get(ctx context.Context, name string) ([]byte, error)
	Stat(ctx context.Context, name string) (Info, error)
	Delete(ctx context.Context, name string) error
}

// testObjectStore is the conformance suite for object stores. open returns
// a new, empty store for each subtest.
func testObjectStore(t *testing.T, open func(t *testing.T) objectStore) {
	t.Run("lifecycle", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name, contentType string
			data              []byte
		}{
			{OutputName(testHash, "png"), "image/png", []byte("\x89PNG fake")},
			{OutputName(testHash, "webp"), "image/webp", []byte("RIFF fake")},
			{"k/v1-0123abcd.json", "application/json", []byte(`{"object":"x"}`)},
			{"a/b/c/d.bin", "application/octet-stream", bytes.Repeat([]byte{7}, 1<<20)},
			{"empty.bin", "application/octet-stream", []byte{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				s := open(t)

				created, err := s.Put(ctx, tc.name, tc.data, tc.contentType)
				if err != nil || !created {
					t.Fatalf("first Put = %v, %v; want true, nil", created, err)
				}
				got, err := s.Get(ctx, tc.name)
				if err != nil || !bytes.Equal(got, tc.data) {
					t.Fatalf("Get = %d bytes, %v; want the %d bytes put", len(got), err, len(tc.data))
				}
				info, err := s.Stat(ctx, tc.name)
				if err != nil {
					t.Fatalf("Stat: %v", err)
				}
				want := Info{Name: tc.name, Size: int64(len(tc.data)), ContentType: tc.contentType}
				if diff := cmp.Diff(want, info, cmpopts.IgnoreFields(Info{}, "ModTime")); diff != "" {
					t.Errorf("Stat (-want +got):\n%s", diff)
				}
				if info.ModTime.IsZero() {
					t.Errorf("Stat: zero ModTime")
				}

				// Idempotent: a second Put neither reports creation nor
				// rewrites the object.
				created, err = s.Put(ctx, tc.name, []byte("something else"), tc.contentType)
				if err != nil || created {
					t.Fatalf("second Put = %v, %v; want false, nil", created, err)
				}
				if got, _ := s.Get(ctx, tc.name); !bytes.Equal(got, tc.data) {
					t.Fatalf("second Put rewrote the object")
				}

				if err := s.Delete(ctx, tc.name); err != nil {
					t.Fatalf("Delete: %v", err)
				}
				if _, err := s.Get(ctx, tc.name); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Get after Delete = %v, want ErrNotFound wrapping fs.ErrNotExist", err)
				}
				if _, err := s.Stat(ctx, tc.name); !errors.Is(err, ErrNotFound) {
					t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
				}
				if err := s.Delete(ctx, tc.name); err != nil {
					t.Errorf("second Delete = %v, want nil", err)
				}
				if created, err := s.Put(ctx, tc.name, tc.data, tc.contentType); err != nil || !created {
					t.Errorf("Put after Delete = %v, %v; want true, nil", created, err)
				}
			})
		}
	})

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), open(t)
		name := OutputName(testHash, "png")
		if _, err := s.Get(ctx, name); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get = %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, name); err != nil {
			t.Errorf("Delete = %v, want nil", err)
		}
	})

	// A Put without a content type stores the one for the name's
	// extension, and Get hands out a copy the caller may scribble on.
	t.Run("defaults and copies", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), open(t)
		for _, tc := range []struct{ name, want string }{
			{OutputName(testHash, "gif"), "image/gif"},
			{"k/v1-default.json", "application/json"},
			{"x/noext", "application/octet-stream"},
		} {
			if created, err := s.Put(ctx, tc.name, []byte("data"), ""); err != nil || !created {
				t.Fatalf("Put(%q) = %v, %v; want true, nil", tc.name, created, err)
			}
			info, err := s.Stat(ctx, tc.name)
			if err != nil || info.ContentType != tc.want {
				t.Errorf("Stat(%q) = %q, %v; want content type %q", tc.name, info.ContentType, err, tc.want)
			}
			got, err := s.Get(ctx, tc.name)
			if err != nil {
				t.Fatalf("Get(%q): %v", tc.name, err)
			}
			got[0] = 'X'
			if again, _ := s.Get(ctx, tc.name); string(again) != "data" {
				t.Errorf("Get(%q) after changing an earlier result = %q, want %q", tc.name, again, "data")
			}
		}
	})

	t.Run("invalid names", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), open(t)
		for _, tc := range nameCases {
			if tc.valid {
				continue
			}
			if _, err := s.Put(ctx, tc.name, []byte("x"), "text/plain"); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Put(%q) = %v, want ErrInvalidName", tc.name, err)
			}
			if _, err := s.Get(ctx, tc.name); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Get(%q) = %v, want ErrInvalidName", tc.name, err)
			}
			if _, err := s.Stat(ctx, tc.name); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Stat(%q) = %v, want ErrInvalidName", tc.name, err)
			}
			if err := s.Delete(ctx, tc.name); !errors.Is(err, ErrInvalidName) {
				t.Errorf("Delete(%q) = %v, want ErrInvalidName", tc.name, err)
			}
		}
	})

	t.Run("canceled context", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		name := "k/v1-canceled.json"
		if _, err := s.Put(t.Context(), "k/v1-present.json", []byte("x"), "application/json"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Put(ctx, name, []byte("x"), "application/json"); !errors.Is(err, context.Canceled) {
			t.Errorf("Put = %v, want context.Canceled", err)
		}
		if _, err := s.Get(t.Context(), name); !errors.Is(err, ErrNotFound) {
			t.Errorf("a canceled Put stored the object: Get = %v", err)
		}
		if _, err := s.Get(ctx, "k/v1-present.json"); !errors.Is(err, context.Canceled) {
			t.Errorf("Get = %v, want context.Canceled", err)
		}
		if _, err := s.Stat(ctx, "k/v1-present.json"); !errors.Is(err, context.Canceled) {
			t.Errorf("Stat = %v, want context.Canceled", err)
		}
		if err := s.Delete(ctx, "k/v1-present.json"); !errors.Is(err, context.Canceled) {
			t.Errorf("Delete = %v, want context.Canceled", err)
		}
		if _, err := s.Get(t.Context(), "k/v1-present.json"); err != nil {
			t.Errorf("a canceled Delete removed the object: Get = %v", err)
		}
	})

	// Many writers race to create one name with different bytes while
	// readers poll it: exactly one writer wins, its bytes are stored, and
	// no reader ever sees anything but nothing or a complete payload.
	t.Run("concurrent puts", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), open(t)
		const writers, size = 16, 256 << 10
		name := "k/v1-race.json"
		payload := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, size) }

		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []int
			done    = make(chan struct{})
		)
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					data, err := s.Get(ctx, name)
					if errors.Is(err, ErrNotFound) {
						continue
					}
					if err != nil {
						t.Errorf("Get during Puts: %v", err)
						return
					}
					if len(data) != size || !bytes.Equal(data, payload(int(data[0]-'a'))) {
						t.Errorf("Get during Puts saw a partial or mixed object (%d bytes)", len(data))
						return
					}
				}
			})
		}
		var writersWG sync.WaitGroup
		start := make(chan struct{})
		for i := range writers {
			writersWG.Go(func() {
				<-start
				created, err := s.Put(ctx, name, payload(i), "application/json")
				if err != nil {
					t.Errorf("Put %d: %v", i, err)
					return
				}
				if created {
					mu.Lock()
					winners = append(winners, i)
					mu.Unlock()
				}
			})
		}
		close(start)
		writersWG.Wait()
		close(done)
		wg.Wait()

		if len(winners) != 1 {
			t.Fatalf("%d Puts reported created=true (%v), want exactly 1", len(winners), winners)
		}
		got, err := s.Get(ctx, name)
		if err != nil || !bytes.Equal(got, payload(winners[0])) {
			t.Fatalf("stored object is not the winner's payload (err %v)", err)
		}
	})

	t.Run("distinct names in parallel", func(t *testing.T) {
		t.Parallel()
		ctx, s := t.Context(), open(t)
		var wg sync.WaitGroup
		for i := range 32 {
			wg.Go(func() {
				data := []byte(strings.Repeat("x", i))
				name := OutputName(HashHex(data), "png")
				if created, err := s.Put(ctx, name, data, "image/png"); err != nil || !created {
					t.Errorf("Put %d = %v, %v", i, created, err)
				}
				if got, err := s.Get(ctx, name); err != nil || !bytes.Equal(got, data) {
					t.Errorf("Get %d = %q, %v", i, got, err)
				}
			})
		}
		wg.Wait()
	})
}
