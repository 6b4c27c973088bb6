//! DICOMweb PACS backend (QIDO-RS / WADO-RS) presented as an XDS-I.b source.
