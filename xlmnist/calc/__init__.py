"""xlmnist inside LibreOffice Calc: the live document as the reader's ``Workbook`` (``live``), Calc's
formula text as Excel's (``formula``), Train/Step/Export/Reset on the open document (``actions``, what the
extension's macros call), the ``xlmnist.oxt`` extension (``oxt``) and a LibreOffice process with a UNO
socket (``office``, for tests and scripts). Only ``actions`` needs torch; ``office`` and ``formula`` run
under any Python that has ``uno`` (Debian's ``/usr/bin/python3``)."""
