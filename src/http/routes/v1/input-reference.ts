import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AppError } from '../../../core/errors.ts';
import type { InputReference } from '../../../core/ports.ts';

export const MAX_REFERENCE_BYTES = 10 * 1024 * 1024;
const PARAM = 'input_reference';

/** Uploaded reference images, by request: multipart files never enter the validated body. */
const uploads = new WeakMap<FastifyRequest, InputReference>();

/**
 * preValidation hook of the multipart-capable POSTs: turns the form into the plain
 * object the JSON schema validates, as if it had been sent as JSON. openai-node 6.28+
 * always sends multipart, with nested fields bracket-encoded (`input_reference[image_url]`,
 * see its `src/internal/uploads.ts` `addFormValue`); the uploaded image is kept aside.
 */
export async function parseMultipartBody(request: FastifyRequest): Promise<void> {
  if (!request.isMultipart()) return;
  const body: Record<string, unknown> = {};
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      if (part.fieldname !== PARAM) {
        part.file.resume();
        throw new AppError('validation_error', `Unexpected file field: ${part.fieldname}`, {
          param: part.fieldname,
        });
      }
      const data = await part.toBuffer().catch((error: { code?: string }) => {
        if (error.code !== 'FST_REQ_FILE_TOO_LARGE') throw error;
        throw new AppError('validation_error', 'input_reference image is larger than 10 MB', {
          param: PARAM,
          details: { statusCode: 413 },
        });
      });
      uploads.set(request, { data, contentType: imageType(data, part.mimetype) });
      continue;
    }
    const nested = /^([^[\]]+)\[([^[\]]+)\]$/.exec(part.fieldname);
    if (nested) {
      const [, outer = '', inner = ''] = nested;
      const existing = body[outer];
      const target =
        existing && typeof existing === 'object' ? (existing as Record<string, unknown>) : {};
      target[inner] = part.value;
      body[outer] = target;
    } else {
      body[part.fieldname] = part.value;
    }
  }
  request.body = body;
}

/** SHA-256 of the uploaded image, so an Idempotency-Key binds the file as well as the fields. */
export function uploadDigest(request: FastifyRequest): string | undefined {
  const data = uploads.get(request)?.data;
  return data ? createHash('sha256').update(data).digest('hex') : undefined;
}

/**
 * The reference image of a create request: the uploaded part, or JSON `{image_url}`
 * (http(s) or a data: URL, which is decoded so every provider gets bytes). We have no
 * Files API, so `{file_id}` is refused rather than ignored.
 */
export function inputReferenceOf(
  request: FastifyRequest,
  field: { image_url?: string | undefined; file_id?: string | undefined } | string | undefined,
): InputReference | undefined {
  const uploaded = uploads.get(request);
  if (uploaded) return uploaded;
  if (field === undefined) return undefined;
  if (typeof field === 'string') {
    throw new AppError(
      'validation_error',
      'input_reference must be an uploaded image file or an object with image_url',
      { param: PARAM },
    );
  }
  if (field.file_id !== undefined) {
    throw new AppError(
      'validation_error',
      'input_reference.file_id is not supported: this API has no Files endpoint. Upload the image as a multipart file, or pass input_reference.image_url',
      { param: `${PARAM}.file_id`, details: { code: 'unsupported_parameter' } },
    );
  }
  const url = field.image_url;
  if (url === undefined) {
    throw new AppError('validation_error', 'input_reference needs image_url', {
      param: `${PARAM}.image_url`,
    });
  }
  const dataUrl = /^data:([^;,]+);base64,(.*)$/s.exec(url);
  if (dataUrl) {
    const data = Buffer.from(dataUrl[2] ?? '', 'base64');
    if (data.length > MAX_REFERENCE_BYTES) {
      throw new AppError('validation_error', 'input_reference image is larger than 10 MB', {
        param: `${PARAM}.image_url`,
      });
    }
    return { data, contentType: imageType(data, dataUrl[1]) };
  }
  if (!/^https?:\/\//i.test(url)) {
    throw new AppError(
      'validation_error',
      'input_reference.image_url must be an http(s) URL or a base64 data: URL',
      { param: `${PARAM}.image_url` },
    );
  }
  return { url };
}

/**
 * The image's type from its first bytes, since declared types are often
 * `application/octet-stream`; only JPEG, PNG and WebP are accepted, as OpenAI did.
 */
function imageType(data: Buffer, declared: string | undefined): string {
  let sniffed: string | null = null;
  if (data.subarray(0, 3).equals(Buffer.from([0xff, 0xd8, 0xff]))) sniffed = 'image/jpeg';
  else if (data.subarray(0, 8).equals(Buffer.from('89504e470d0a1a0a', 'hex'))) {
    sniffed = 'image/png';
  } else if (
    data.subarray(0, 4).toString('latin1') === 'RIFF' &&
    data.subarray(8, 12).toString('latin1') === 'WEBP'
  ) {
    sniffed = 'image/webp';
  }
  if (!sniffed) {
    throw new AppError(
      'validation_error',
      `input_reference must be a JPEG, PNG or WebP image${declared ? ` (got ${declared})` : ''}`,
      { param: PARAM, details: { code: 'invalid_image_format' } },
    );
  }
  return sniffed;
}
