package gateway

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/imagegate/imagegate/inference"
)

// GET /v1/models lists each model's kind honestly (retro is a procedural
// generator) and the price a miss then actually charges, with the plan
// table's prices and with a catalogue price.
func TestModelsListKindAndTheChargedPrice(t *testing.T) {
	t.Parallel()
	plans := testPlans(10)
	for _, tc := range []struct {
		name      string
		terms     map[string]inference.ModelTerms
		size      string
		wantPrice int64
	}{
		{"plan table", nil, "512x512", 2},
		{"catalogue price", map[string]inference.ModelTerms{"retro": {PriceCredits: 3}}, "256x256", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{tier: inference.ServerConfig{Terms: tc.terms}, cfg: Config{Plans: plans}})
			res, body := e.get(e.url + "/v1/models")
			if res.StatusCode != 200 {
				t.Fatalf("GET /v1/models: %d %s", res.StatusCode, body)
			}
			var list struct {
				Object string      `json:"object"`
				Data   []modelJSON `json:"data"`
			}
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(list.Data, func(m modelJSON) bool { return m.ID == "retro" })
			if list.Object != "list" || i < 0 {
				t.Fatalf("models: %s", body)
			}
			m := list.Data[i]
			if m.Object != "model" || m.Kind != "procedural" || !slices.Contains(m.Sizes, tc.size) {
				t.Errorf("retro listed as %+v, want object model, kind procedural, size %s", m, tc.size)
			}
			if len(m.Price) != len(m.Sizes) || m.Price[tc.size] != tc.wantPrice {
				t.Errorf("prices %v, want %d credits for %s and one per size", m.Price, tc.wantPrice, tc.size)
			}
			b, _ := e.signedIn("models@example.com")
			before := credits(t, b)
			want(t, b.call("POST", "/v1/images/generations", `{"prompt":"a listed kite","size":"`+tc.size+`"}`, nil), 200)
			if spent := before - credits(t, b); spent != m.Price[tc.size] {
				t.Errorf("a %s miss cost %d credits; /v1/models said %d", tc.size, spent, m.Price[tc.size])
			}
		})
	}
}
