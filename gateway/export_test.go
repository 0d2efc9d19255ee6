package gateway

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/store"
)

// exportAloneEnv is set in the process that runs the export test alone.
const exportAloneEnv = "IMAGEGATE_TEST_EXPORT_ALONE"

// heapSampler is an io.Writer that, every MiB written to it, measures the
// live heap (after a GC) and keeps the peak.
type heapSampler struct {
	w         io.Writer
	n, next   int64
	peak      uint64
	baseline  uint64
	samplings int
}

func (h *heapSampler) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.n += int64(n)
	if h.n >= h.next {
		h.next += 1 << 20
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peak = max(h.peak, ms.HeapAlloc)
		h.samplings++
	}
	return n, err
}

// TestExportOfTenThousandGenerationsToASlowClient exports a history of
// 10,000 generations with 50 distinct 1 MiB images (over 50 MiB of ZIP)
// through a server whose write timeout is 50 ms. The whole response takes
// far longer than that: it gets through only because each entry pushes
// the connection's deadline back. Measured every MiB the client reads,
// the live heap never grows by more than a fraction of the archive, and
// the archive is complete.
//
// The heap is the process's: parallel tests' allocations (a 64 MiB
// decompression bomb, other exports) would count as the export's. The
// test therefore runs itself again in a process of its own and measures
// there.
func TestExportOfTenThousandGenerationsToASlowClient(t *testing.T) {
	t.Parallel()
	if os.Getenv(exportAloneEnv) == "" {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.timeout=30m")
		cmd.Env = append(os.Environ(), exportAloneEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
			t.Fatalf("the export in a process of its own: %v\n%s", err, out)
		}
		return
	}
	const gens, images, imageSize = 10000, 50, 1 << 20
	e := newEnv(t, envOptions{cfg: Config{writeTimeout: 50 * time.Millisecond}})
	b, acct := e.signedIn("big-export@example.com")

	objects, err := edge.NewLocal(filepath.Join(e.dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	hashes := make([]string, images)
	for i := range hashes {
		data := make([]byte, imageSize)
		rand.Read(data)
		hashes[i] = edge.HashHex(data)
		if _, err := objects.Put(t.Context(), edge.OutputName(hashes[i], "png"), data, "image/png"); err != nil {
			t.Fatal(err)
		}
	}
	// Writers in parallel: each generation is one store transaction.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < gens; i += 4 {
				_, _, err := e.db.RecordGeneration(acct.ID, store.Generation{
					Prompt: fmt.Sprintf("export marker %d", i), Model: "retro", ModelVersion: "1", Width: 256, Height: 256,
					Seed: uint64(i), Object: hashes[i%images], Ext: "png", ContentKey: fmt.Sprintf("v1-export-%d", i),
				}, 24*time.Hour)
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	resp := b.call("GET", "/v1/account/export", "", nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", resp.StatusCode)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "export.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sampler := &heapSampler{w: f, baseline: ms.HeapAlloc}
	started := time.Now()
	if _, err := io.CopyBuffer(sampler, resp.Body, make([]byte, 32<<10)); err != nil {
		t.Fatalf("the export was cut off after %d bytes (%v): %v", sampler.n, time.Since(started), err)
	}
	if sampler.n < images*imageSize {
		t.Fatalf("export of %d bytes, want over %d", sampler.n, images*imageSize)
	}
	if grown := int64(sampler.peak) - int64(sampler.baseline); grown > 16<<20 {
		t.Errorf("live heap grew by %d MiB during a %d MiB export: not streamed", grown>>20, sampler.n>>20)
	}

	zr, err := zip.OpenReader(f.Name())
	if err != nil {
		t.Fatalf("export is not a complete ZIP: %v", err)
	}
	defer zr.Close()
	nImages := 0
	var listed []store.Generation
	for _, zf := range zr.File {
		switch {
		case strings.HasPrefix(zf.Name, "images/"):
			nImages++
		case zf.Name == "generations.json":
			rc, err := zf.Open()
			if err != nil {
				t.Fatal(err)
			}
			err = json.NewDecoder(rc).Decode(&listed)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(listed) != gens || nImages != images {
		t.Errorf("export holds %d generations and %d images, want %d and %d", len(listed), nImages, gens, images)
	}
}
