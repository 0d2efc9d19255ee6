package gateway

import (
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// editFields are the multipart fields POST /v1/images/edits understands;
// anything else is refused by name.
var editFields = map[string]bool{
	"prompt": true, "negative_prompt": true, "n": true, "size": true, "response_format": true,
	"seed": true, "style": true, "model": true, "strength": true, "steps": true, "guidance": true,
	// OpenAI fields accepted and ignored.
	"user": true, "quality": true, "background": true, "output_format": true, "input_fidelity": true,
}

func (g *Gateway) edits(c *fiber.Ctx) error {
	if !strings.HasPrefix(strings.ToLower(c.Get(fiber.HeaderContentType)), fiber.MIMEMultipartForm) {
		return badRequest("invalid_content_type", "request body: must be multipart/form-data")
	}
	form, err := c.MultipartForm()
	if err != nil {
		return badRequest("invalid_multipart", "request body: malformed multipart form")
	}

	r, image, err := editRequest(form)
	if err != nil {
		return err
	}
	ref, err := readUpload(image, g.cfg.MaxUploadBytes)
	if err != nil {
		return err
	}
	p, err := g.validate(r)
	if err != nil {
		return err
	}
	if !p.Model.SupportsEdits {
		return badRequest("invalid_model", fmt.Sprintf("model: %s does not support edits", p.Model.Name))
	}
	sum, err := g.checkReference(ref)
	if err != nil {
		return err
	}
	p.Reference = ref
	p.ReferenceSHA256 = sum
	return g.respond(c, p)
}

// editRequest reads the fields of an edit form, refusing unknown and
// repeated ones by name, and returns them with the one image file.
func editRequest(form *multipart.Form) (raw, *multipart.FileHeader, error) {
	for name, vs := range form.Value {
		if !editFields[name] {
			return raw{}, nil, badRequest("unknown_field", fmt.Sprintf("%s: unknown field", name))
		}
		if len(vs) > 1 { // ignored fields too: one body, one reading
			return raw{}, nil, badRequest("invalid_field", fmt.Sprintf("%s: given more than once", name))
		}
	}
	for name := range form.File {
		if name != "image" {
			return raw{}, nil, badRequest("unknown_field", fmt.Sprintf("%s: unknown file field (only image)", name))
		}
	}
	files := form.File["image"]
	if len(files) != 1 {
		return raw{}, nil, badRequest("invalid_image", "image: exactly one file required")
	}
	r := raw{}
	// Values from the form are copies owned by us (mime/multipart), so no
	// Fiber buffer outlives the handler through them.
	value := func(name string) (string, error) {
		vs := form.Value[name]
		if len(vs) > 1 {
			return "", badRequest("invalid_field", fmt.Sprintf("%s: given more than once", name))
		}
		if len(vs) == 0 {
			return "", nil
		}
		return vs[0], nil
	}
	var errs []error
	str := func(name string, dst *string) {
		v, err := value(name)
		errs = append(errs, err)
		*dst = v
	}
	integer := func(name string, dst **int) {
		v, err := value(name)
		if err != nil || v == "" {
			errs = append(errs, err)
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, badRequest("invalid_"+name, fmt.Sprintf("%s: must be an integer", name)))
			return
		}
		*dst = &n
	}
	float := func(name string, dst **float64) {
		v, err := value(name)
		if err != nil || v == "" {
			errs = append(errs, err)
			return
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, badRequest("invalid_"+name, fmt.Sprintf("%s: must be a number", name)))
			return
		}
		*dst = &f
	}
	str("prompt", &r.Prompt)
	str("negative_prompt", &r.NegativePrompt)
	str("size", &r.Size)
	str("response_format", &r.Format)
	str("style", &r.Style)
	str("model", &r.Model)
	integer("n", &r.N)
	integer("steps", &r.Steps)
	float("strength", &r.Strength)
	float("guidance", &r.Guidance)
	var seed *int
	integer("seed", &seed)
	if seed != nil {
		s := int64(*seed)
		r.Seed = &s
	}
	for _, err := range errs {
		if err != nil {
			return raw{}, nil, err
		}
	}
	return r, files[0], nil

}

// readUpload reads one uploaded file, refusing more than limit bytes.
func readUpload(fh *multipart.FileHeader, limit int) ([]byte, error) {
	if fh.Size > int64(limit) {
		return nil, &apiError{Status: fiber.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "image_too_large",
			Msg: fmt.Sprintf("image: larger than %d bytes", limit)}
	}
	f, err := fh.Open()
	if err != nil {
		return nil, fmt.Errorf("gateway: open upload: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("gateway: read upload: %w", err)
	}
	if len(data) > limit {
		return nil, &apiError{Status: fiber.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "image_too_large",
			Msg: fmt.Sprintf("image: larger than %d bytes", limit)}
	}
	if len(data) == 0 {
		return nil, badRequest("invalid_image", "image: empty file")
	}
	return data, nil
}

var errDecodePanic = errors.New("gateway: image decoder panicked")
