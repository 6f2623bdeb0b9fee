"""Reports: self-contained HTML pages of evaluations and studies, built from :mod:`reasonlens.plot` figures.

The method packages never import this layer; the command line runs a method, saves its result, then reports it.

>>> from reasonlens.reports import HtmlReport
>>> page = HtmlReport("demo")
>>> page.paragraph("hello")
>>> "hello" in page.to_html()
True
"""

from reasonlens.reports.evaluation import evaluation_report
from reasonlens.reports.html import HtmlReport
from reasonlens.reports.ipg import ipg_report
from reasonlens.reports.mechanism import mechanism_report
from reasonlens.reports.step_importance import step_importance_report

__all__ = ["HtmlReport", "evaluation_report", "ipg_report", "mechanism_report", "step_importance_report"]
