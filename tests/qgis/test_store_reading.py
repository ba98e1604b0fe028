"""Reading a store reads only the answers asked for: the store of unsaved projects collects every
answer ever asked in one, and opening the dock must not parse them all."""
from qgis.core import QgsCoordinateReferenceSystem, QgsProject
from qgis.PyQt.QtCore import QCoreApplication

from georeasoner_plugin.core.georef import GeoTransform
from georeasoner_plugin.core.protocol import Answer, AnswerObject
from georeasoner_plugin.qgis_io.features import georeference
from georeasoner_plugin.qgis_io.store import AnswerStore


def _answer(question: str, answer_id: str = "") -> Answer:
    answer = Answer(question=question, profile="remotereasoner", image_width=64, image_height=48,
                    objects=[AnswerObject(index=0, box=(4.0, 5.0, 20.0, 30.0), points=[(10.0, 12.0)])])
    if answer_id:
        answer.answer_id = answer_id
    return answer


def test_only_the_answers_asked_for_are_read(tmp_path):
    project = QgsProject.instance()
    store = AnswerStore(tmp_path / "unsaved_georeasoner.gpkg", project.transformContext())
    crs = QgsCoordinateReferenceSystem("EPSG:32614")
    transform = GeoTransform.from_gdal((500000.0, 0.6, 0.0, 5200000.0, 0.0, -0.6))
    answers = [_answer(f"question {i}") for i in range(3)] + [_answer("quoted", "it's \"odd\"")]
    for answer in answers:
        store.add(georeference(answer, transform, crs, ["layer"], "raster", project.transformContext()))

    assert [s.answer.question for s in store.all()] == ["question 0", "question 1", "question 2", "quoted"]
    wanted = {answers[2].answer_id, answers[0].answer_id, "not-in-this-store"}
    assert sorted(s.answer.question for s in store.all(wanted)) == ["question 0", "question 2"]
    assert store.all(set()) == [] and store.answers([]) == []
    assert store.get(answers[1].answer_id).answer.objects[0].box == (4.0, 5.0, 20.0, 30.0)
    assert store.get("it's \"odd\"").answer.question == "quoted"  # quoted in the filter, not spliced in
    assert store.get("x' OR '1'='1") is None
    store.remove(answers[1].answer_id)
    assert [s.answer.question for s in store.all()] == ["question 0", "question 2", "quoted"]


def test_closing_a_never_saved_project_drops_only_its_answers_from_the_unsaved_store(tmp_path):
    from georeasoner_plugin.qgis_io.layers import UnsavedAnswers, remember_answer
    from georeasoner_plugin.qgis_io.store import unsaved_store_path

    project = QgsProject.instance()
    project.clear()
    janitor = UnsavedAnswers(project)
    unsaved = AnswerStore(unsaved_store_path(), project.transformContext())
    crs = QgsCoordinateReferenceSystem("EPSG:32614")
    transform = GeoTransform.from_gdal((500000.0, 0.6, 0.0, 5200000.0, 0.0, -0.6))
    ours, another_qgis = _answer("ours"), _answer("another QGIS's unsaved project")
    for answer in (ours, another_qgis):
        unsaved.add(georeference(answer, transform, crs, ["layer"], "raster", project.transformContext()))
    remember_answer(project, ours.answer_id)

    project.clear()  # File > New, changes discarded
    QCoreApplication.processEvents()  # the answers go from the event loop, once the layers are gone
    assert unsaved.get(ours.answer_id) is None
    assert unsaved.get(another_qgis.answer_id) is not None  # not this project's: kept

    saved = AnswerStore(tmp_path / "p_georeasoner.gpkg", project.transformContext())
    kept = _answer("saved project's")
    saved.add(georeference(kept, transform, crs, ["layer"], "raster", project.transformContext()))
    remember_answer(project, kept.answer_id)
    project.setFileName(str(tmp_path / "p.qgz"))
    project.clear()  # a saved project's answers live beside it: untouched
    QCoreApplication.processEvents()
    assert saved.get(kept.answer_id) is not None
    unsaved.remove(another_qgis.answer_id)
    janitor.deleteLater()
