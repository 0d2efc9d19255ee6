package gateway

import (
	"strconv"

	"github.com/gofiber/fiber/v2"
)

// modelJSON is one entry of GET /v1/models: OpenAI's model object (id,
// object, owned_by) with what a client needs to choose: whether the model
// is a neural network or a procedural generator, its sizes and styles, and
// what one image costs at each size.
type modelJSON struct {
	ID          string           `json:"id"`
	Object      string           `json:"object"`
	OwnedBy     string           `json:"owned_by"`
	Kind        string           `json:"kind"`
	Description string           `json:"description,omitempty"`
	Sizes       []string         `json:"sizes"`
	Styles      []string         `json:"styles,omitempty"`
	Price       map[string]int64 `json:"price_credits"`
}

// listModels answers GET /v1/models from the tier's catalogue. Prices are
// the ones a miss reserves (generateMisses): the catalogue's per-image
// price when it sets one, else the plan table's price for the size.
func (g *Gateway) listModels(c *fiber.Ctx) error {
	ms := g.catalog.list()
	out := struct {
		Object string      `json:"object"`
		Data   []modelJSON `json:"data"`
	}{Object: "list", Data: make([]modelJSON, 0, len(ms))}
	for _, m := range ms {
		j := modelJSON{
			ID: m.Name, Object: "model", OwnedBy: "imagegate",
			Kind: m.Kind, Description: m.Description, Styles: m.Styles,
			Sizes: make([]string, 0, len(m.Sizes)), Price: make(map[string]int64, len(m.Sizes)),
		}
		for _, s := range m.Sizes {
			name := strconv.Itoa(s) + "x" + strconv.Itoa(s)
			j.Sizes = append(j.Sizes, name)
			j.Price[name] = g.imagePrice(m, s)
		}
		out.Data = append(out.Data, j)
	}
	return c.JSON(out)
}

// imagePrice is what one image of model m at size px costs in credits.
func (g *Gateway) imagePrice(m model, px int) int64 {
	if m.PriceCredits > 0 {
		return m.PriceCredits
	}
	return g.cfg.Plans.imageCost(px)
}
