// Silences TF.js's one-time "install tfjs-node" notice in test output (its warn() is muted in PROD).
import * as tf from '@tensorflow/tfjs-core';

tf.env().set('PROD', true);
