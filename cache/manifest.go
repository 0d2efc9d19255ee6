package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// manifestVersion is the "v" of every manifest this code writes; manifests
// with another version are misses.
const manifestVersion = 1

// manifest is the L3 record, "k/<key>.json" in the object store: what a Key
// resolved to, so that a node whose own tiers lack the key can find the
// output another node made. It is JSON so that operators can read it and
// other versions of imagegate can skip what they do not know.
type manifest struct {
	V            int       `json:"v"`
	Key          string    `json:"key"`
	Object       string    `json:"object"`
	Ext          string    `json:"ext"`
	ContentType  string    `json:"content_type"`
	Width        int       `json:"width"`
	Height       int       `json:"height"`
	Seed         uint64    `json:"seed"`
	Model        string    `json:"model"`
	ModelVersion string    `json:"model_version"`
	Size         int64     `json:"size"`
	Created      time.Time `json:"created"`
	// Policy is Entry.Policy; absent in manifests written before it.
	Policy uint64 `json:"policy,omitempty"`
}

var errBadManifest = errors.New("cache: bad manifest")

func manifestName(key Key) string { return ManifestName(key.String()) }

// ManifestName is the object-store name of the manifest of the key whose
// String form is key: deleting it (with the output) leaves other gateways
// nothing to find in L3.
func ManifestName(key string) string { return "k/" + key + ".json" }

func encodeManifest(key Key, e Entry) ([]byte, error) {
	return json.Marshal(manifest{
		V: manifestVersion, Key: key.String(),
		Object: e.Object, Ext: e.Ext, ContentType: e.ContentType,
		Width: e.Width, Height: e.Height, Seed: e.Seed,
		Model: e.Model, ModelVersion: e.ModelVersion,
		Size: e.Size, Created: e.Created, Policy: e.Policy,
	})
}

// decodeManifest parses a manifest and checks that it is one this code
// wrote for key: a manifest stored under the wrong name is a miss, not
// someone else's image.
func decodeManifest(key Key, data []byte) (Entry, error) {
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", errBadManifest, err)
	}
	if m.V != manifestVersion || m.Key != key.String() || !validObjectName(m.Object, m.Ext) ||
		m.Size <= 0 || m.ContentType == "" {
		return Entry{}, errBadManifest
	}
	return Entry{
		Object: m.Object, Ext: m.Ext, ContentType: m.ContentType,
		Width: m.Width, Height: m.Height, Seed: m.Seed,
		Model: m.Model, ModelVersion: m.ModelVersion,
		Size: m.Size, Created: m.Created.UTC(), Policy: m.Policy,
	}, nil
}

// outputName is the object store name of an output: "o/<hash>.<ext>", as in
// package edge.
func outputName(hash, ext string) string { return "o/" + hash + "." + ext }

// hashHex is the lowercase hex SHA-256 of data: an output's name.
func hashHex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// validObjectName reports whether hash and ext can name an output: a
// lowercase hex SHA-256 and a short lowercase alphanumeric extension.
func validObjectName(hash, ext string) bool {
	if len(hash) != 2*sha256.Size || !isLowerHex(hash) || ext == "" || len(ext) > 8 {
		return false
	}
	for i := 0; i < len(ext); i++ {
		c := ext[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
