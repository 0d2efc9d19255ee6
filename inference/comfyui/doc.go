// Package comfyui is an inference backend that runs API-format ComfyUI
// workflows on one or more ComfyUI servers.
//
// A model is a set of workflow templates, one per style, and optionally one
// for image-to-image. A template is the JSON ComfyUI's "Save (API format)"
// writes, in which an input whose whole value is a placeholder such as
// "{{prompt}}" or "{{seed}}" receives that request parameter. Templates are
// decoded once, and each generation sets the placeholders' values in a copy
// of the decoded graph: the prompt is never pasted into JSON text, so no
// prompt can change the workflow's structure.
//
// A generation follows ComfyUI's documented API: open the websocket
// /ws?clientId=ID, POST /prompt with that client_id, follow progress,
// executing and executed messages until the prompt finishes, then read the
// outputs from /history/{prompt_id} and fetch the image from /view. A
// reference image goes up through /upload/image first and is overwritten
// with a blank image when the generation ends. A canceled generation is
// removed from the queue (POST /queue delete) and interrupted (POST
// /interrupt).
//
// Each server is a worker the tier's scheduler places jobs on; two models
// naming the same server share that worker.
package comfyui
