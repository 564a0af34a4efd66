"""transformers' own conformance suite (ModelTesterMixin, ConfigTester) run against MSAModel.

Set up the way ``tests/models/clip/test_modeling_clip.py`` sets up ``CLIPModelTest``: a model
tester holding a text tester and a vision tester, the same class attributes, and only the
skips CLIP's test has, each with CLIP's reason. The suite itself comes from the transformers
sdist matching the installed version (see ``transformers_suite.py``); without PyPI the module
is skipped with the reason.

Two towers are covered: a timm CNN (``test_resnet``; its "hidden states" are the stem and stage
maps, so the vision tester counts 4 layers) and a transformers CLIP vision tower.
"""

from __future__ import annotations

import tempfile
import unittest

import numpy as np
import pytest
import torch
import transformers
from parameterized import parameterized
from transformers import BertConfig, CLIPVisionConfig
from transformers.testing_utils import slow
from transformers_suite import SuiteUnavailable, load_suite

from msa_hf import MSAConfig, MSAModel

try:
    modeling_common, configuration_common = load_suite()
except SuiteUnavailable as error:
    pytest.skip(f"transformers' test suite could not be fetched: {error}", allow_module_level=True)

ModelTesterMixin = modeling_common.ModelTesterMixin
ConfigTester = configuration_common.ConfigTester


class MSATextModelTester:
    """A 2-layer BERT, shaped like CLIP's text tester."""

    def __init__(self, parent, batch_size=4, seq_length=7, vocab_size=99, hidden_size=32, num_hidden_layers=2):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers

    def get_config(self) -> BertConfig:
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )

    def prepare_config_and_inputs_for_common(self):
        input_ids = modeling_common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.zeros_like(input_ids)
        for row, length in enumerate(np.random.randint(2, self.seq_length + 1, size=self.batch_size)):
            attention_mask[row, :length] = 1  # padding on the right, [CLS] always attended
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


class MSATimmVisionModelTester:
    """timm ``test_resnet`` with every feature level as a scale: stem + 4 stages."""

    def __init__(self, parent, batch_size=4, image_size=32):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_hidden_layers = 4  # stages after the stem

    def config_kwargs(self) -> dict:
        return {
            "vision_backbone": "test_resnet",
            "vision_out_indices": (0, 1, 2, 3, 4),
            "vision_pooling": ("max", "max", "max", "max", "avg"),
            "image_size": self.image_size,
        }

    def prepare_config_and_inputs_for_common(self):
        pixel_values = modeling_common.floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        return None, {"pixel_values": pixel_values}


class MSACLIPVisionTowerTester(MSATimmVisionModelTester):
    """A 2-layer CLIP vision tower shaped like CLIP's vision tester; every hidden state is a scale."""

    def __init__(self, parent, batch_size=4, image_size=30):
        super().__init__(parent, batch_size, image_size)
        self.num_hidden_layers = 2
        self.hidden_size = 32

    def config_kwargs(self) -> dict:
        vision_config = CLIPVisionConfig(
            image_size=self.image_size,
            patch_size=2,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=4,
            intermediate_size=37,
        )
        return {
            "vision_config": vision_config.to_dict(),
            "vision_out_indices": (0, 1, 2),
            "vision_pooling": ("cls", "cls", "mean"),
            "image_size": self.image_size,
        }


class MSAModelTester:
    vision_tester_class = MSATimmVisionModelTester

    def __init__(self, parent, is_training=True):
        self.parent = parent
        self.text_model_tester = MSATextModelTester(parent)
        self.vision_model_tester = self.vision_tester_class(parent)
        self.batch_size = self.text_model_tester.batch_size  # the batching-equivalence test reads it
        self.is_training = is_training

    def get_config(self) -> MSAConfig:
        return MSAConfig(
            text_config=self.text_model_tester.get_config().to_dict(),
            text_max_length=self.text_model_tester.seq_length,
            mscmat_num_heads=4,
            **self.vision_model_tester.config_kwargs(),
        )

    def prepare_config_and_inputs_for_common(self):
        _, text_inputs = self.text_model_tester.prepare_config_and_inputs_for_common()
        _, image_inputs = self.vision_model_tester.prepare_config_and_inputs_for_common()
        return self.get_config(), {**text_inputs, **image_inputs, "return_loss": True}


class MSACLIPVisionModelTester(MSAModelTester):
    vision_tester_class = MSACLIPVisionTowerTester


class MSAModelTesterMixin(ModelTesterMixin):
    """CLIPModelTest's setup for MSAModel, run by one test class per kind of image tower."""

    all_model_classes = (MSAModel,)
    additional_model_inputs = ["pixel_values"]
    test_head_masking = False
    test_pruning = False
    test_resize_embeddings = False
    test_attention_outputs = False
    _is_composite = True
    # MSA's _init_weights covers every module (towers included): opt in to transformers' check of it.
    test_can_init_all_missing_weights_before_2023 = True
    model_tester_class = MSAModelTester

    def setUp(self):
        self.model_tester = self.model_tester_class(self)
        self.config_tester = ConfigTester(
            self, config_class=MSAConfig, has_text_modality=False, common_properties=["projection_dim"]
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = MSAModel(config).eval()
        with torch.no_grad():
            result = model(**inputs)
        batch = self.model_tester.batch_size
        self.assertEqual(result.logits_per_image.shape, (batch, batch))
        self.assertEqual(result.logits_per_text.shape, (batch, batch))

    @unittest.skip(reason="Hidden_states is tested in individual model tests")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Inputs_embeds is tested in individual model tests")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="Retain_grad is tested in individual model tests")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="MSAModel does not have input/output embeddings")
    def test_model_get_set_embeddings(self):
        pass

    @parameterized.expand(modeling_common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    @slow
    def test_eager_matches_sdpa_inference(self, *args):
        # slow, as for CLIPModelTest; then the common test itself
        return getattr(ModelTesterMixin, self._testMethodName)(self)

    def test_sdpa_can_dispatch_composite_models(self):
        # Overridden as CLIP's test overrides it: the towers sit where CLIP's do, but an MSA image
        # tower wraps its backbone (a timm one has no attention implementation at all).
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = MSAModel(config)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            model_sdpa = MSAModel.from_pretrained(folder, attn_implementation="sdpa").eval()
            model_eager = MSAModel.from_pretrained(folder, attn_implementation="eager").eval()
        towers = [lambda m: m.text_model]
        if config.vision_config is not None:
            towers.append(lambda m: m.vision_model.backbone)
        for tower in towers:
            self.assertEqual(tower(model_sdpa).config._attn_implementation, "sdpa")
            self.assertEqual(tower(model_eager).config._attn_implementation, "eager")
        self.assertEqual(model_sdpa.config._attn_implementation, "sdpa")
        self.assertEqual(model_eager.config._attn_implementation, "eager")


class MSAModelWithTimmTowerTest(MSAModelTesterMixin, unittest.TestCase):
    # A timm tower has no vision_config to read the image width from; the shapes of
    # get_image_features are checked in tests/test_modeling_msa.py instead.
    skip_test_image_features_output_shape = True

    @unittest.skip(reason="A CNN image tower (timm) has no attention maps; MSAModelWithCLIPVisionTest checks them")
    def test_get_image_features_attentions(self):
        pass

    @unittest.skipIf(
        transformers.__version__.startswith("4."),
        reason="transformers 4.57's set_config_for_less_flaky_test sets attributes on a None vision_config "
        "(fixed in 5.x, where this test runs)",
    )
    def test_batching_equivalence(self):
        super().test_batching_equivalence()


class MSAModelWithCLIPVisionTest(MSAModelTesterMixin, unittest.TestCase):
    model_tester_class = MSACLIPVisionModelTester
