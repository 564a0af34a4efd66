"""The preamble of a child interpreter where ``msa_hf`` cannot be imported.

Remote-code loads (a saved folder with ``trust_remote_code=True``) must work for someone
without the package; the child scripts of the remote-code, pipeline and cross-version tests
start with this so that no import of ``msa_hf`` can slip through.
"""

BLOCK_MSA_HF = r"""
import sys


class BlockMsaHf:
    def find_spec(self, name, path=None, target=None):
        if name == "msa_hf" or name.startswith("msa_hf."):
            raise ModuleNotFoundError(f"msa_hf is kept off the path in this check ({name})")
        return None


sys.meta_path.insert(0, BlockMsaHf())
"""
