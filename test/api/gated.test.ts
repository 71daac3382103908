import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { createApp, listen } from '../../src/api/server.ts';
import { createEngine } from '../../src/engine/pool.ts';
import { writeFusionModel } from '../../src/features/fusion-model-file.ts';
import { initGatedFusionParams } from '../../src/features/gated-fusion.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';
import { untrainedSummary } from '../helpers/fusion.ts';

test('with a trained fusion configured, the HTTP API indexes its 128-D vectors', async (t) => {
  if (!hasData(t)) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-gated-api-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const model = path.join(dir, 'fusion.reidbfus');
  const header = writeFusionModel(
    model,
    {
      embedderId: 'dlib-resnet-v1',
      alignMode: 'mesh',
      createdAt: new Date().toISOString(),
      ...untrainedSummary(),
    },
    initGatedFusionParams(128, 126, 3, undefined, { init: 'appearance-identity' }),
  );

  const gallery = await openGallery(path.join(dir, 'gallery'));
  const engine = await createEngine({ workers: 1, pipeline: { fusionModel: model } });
  const server: Server = await listen(createApp({ engine, gallery }), 0, '127.0.0.1');
  t.teardown(async () => {
    server.close();
    await engine.close();
    gallery.close();
  });
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const post = (url: string, body: Buffer) =>
    fetch(base + url, {
      method: 'POST',
      body: new Uint8Array(body),
      headers: { 'content-type': 'image/jpeg' },
    });

  for (const person of ['Alvaro_Uribe', 'Abdullah_Gul']) {
    for (const n of [1, 2])
      t.is((await post(`/v1/identities/${person}/faces`, lfw(person, n))).status, 201);
  }
  t.like(gallery.config(), { fusionId: header.id, fusedDim: 128 });
  const status = await (await fetch(`${base}/v1/status`)).json();
  t.is(status.pipeline.fusionId, header.id);

  const found = await (await post('/v1/search?k=2', lfw('Alvaro_Uribe', 3))).json();
  t.is(found.faces[0].matches[0].identity, 'Alvaro_Uribe');
});
